"""Broadcast channels' message broker: history, ids and fan-out to this worker's streams."""

from __future__ import annotations

{% if cookiecutter.broker == "redis" -%}
from ..settings import Settings, sentinel_addresses
{%- else -%}
from ..settings import Settings
{%- endif %}
from .base import Broker, BrokerUnavailable
from .fanout import Subscription
{%- if cookiecutter.broker == "memory" %}
from .memory import MemoryBroker
{%- endif %}
from .messages import BadEventId, Message, Page, parse_id
{%- if cookiecutter.broker == "redis" %}
from .redis import RedisBroker
from .redis_cluster import RedisClusterBroker
{%- endif %}

__all__ = [
    "BadEventId",
    "Broker",
    "BrokerUnavailable",
    "Message",
    "Page",
    "Subscription",
    "create_broker",
    "parse_id",
]


def create_broker(settings: Settings) -> Broker:
{%- if cookiecutter.broker == "redis" %}
    if settings.redis_cluster:
        return RedisClusterBroker(
            url=settings.redis_url,
            history_size=settings.history_size,
            replay_max_bytes=settings.replay_max_bytes,
        )
    return RedisBroker(
        url=settings.redis_url,
        history_size=settings.history_size,
        replay_max_bytes=settings.replay_max_bytes,
        sentinels=sentinel_addresses(settings.redis_sentinels),
        master=settings.redis_sentinel_master,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=settings.redis_wait_timeout,
    )
{%- else %}
    return MemoryBroker(
        history_size=settings.history_size,
        history_max_bytes=settings.history_max_bytes,
        max_channels=settings.max_channels,
        replay_max_bytes=settings.replay_max_bytes,
    )
{%- endif %}
