"""Broadcast channels' message broker: history, ids and fan-out to this worker's streams."""

from __future__ import annotations

from ..settings import Settings
from .base import BadEventId, Broker, BrokerUnavailable, Message, Replay, parse_id
{%- if cookiecutter.broker == "redis" %}
from .redis import RedisBroker
{%- else %}
from .memory import MemoryBroker
{%- endif %}

__all__ = [
    "BadEventId",
    "Broker",
    "BrokerUnavailable",
    "Message",
    "Replay",
    "create_broker",
    "parse_id",
]


def create_broker(settings: Settings) -> Broker:
{%- if cookiecutter.broker == "redis" %}
    return RedisBroker(url=settings.redis_url, history_size=settings.history_size)
{%- else %}
    return MemoryBroker(history_size=settings.history_size, max_channels=settings.max_channels)
{%- endif %}
