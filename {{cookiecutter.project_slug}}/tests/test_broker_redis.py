"""The Redis broker against a real redis-server: ids, few connections, coalescing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from {{ cookiecutter.project_slug }}.broker.redis import RedisBroker, live_key
from {{ cookiecutter.project_slug }}.delivery import EventStream, ReceiveStream

from redis_server import RedisServer
from sse_client import new_channel

T = TypeVar("T")


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


def stream(max_pending: int = 64) -> EventStream:
    return ReceiveStream(never, max_pending)


def with_broker(url: str, test: Callable[[RedisBroker], Awaitable[T]], timeout: float = 20) -> T:
    async def run() -> T:
        broker = RedisBroker(url=url, history_size=100)
        await broker.start()
        try:
            return await asyncio.wait_for(test(broker), timeout)
        finally:
            await broker.stop()

    return asyncio.run(run())


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - polling on purpose
        await asyncio.sleep(0.02)


async def catch_up(
    broker: RedisBroker, channel: str, after: str | None, each: EventStream
) -> bytes:
    """Register `each` and catch it up: the chunks it would write before going live."""
    subscription = broker.subscribe(channel, each)
    return b"".join([chunk async for chunk in broker.catch_up(subscription, after)])


async def connections(url: str) -> int:
    """Connections Redis holds, not counting the one asking."""
    async with Redis.from_url(url) as admin:
        return int((await admin.info("clients"))["connected_clients"]) - 1


def test_ids_are_redis_stream_ids_and_replay_reads_them(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[str], bytes]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(4)]
        return ids, await catch_up(broker, channel, ids[0], stream())

    ids, replay = with_broker(redis_db.url, test)
    assert all(re.fullmatch(r"\d+-\d+", each) for each in ids)
    assert replay == b"".join(f"id: {i}\ndata: m{n}\n\n".encode() for n, i in enumerate(ids) if n)


def test_the_largest_id_redis_allows_is_an_unknown_id_not_an_error(redis_db: RedisServer):
    channel = new_channel()
    largest = "18446744073709551615-18446744073709551615"

    async def test(broker: RedisBroker) -> bytes:
        await broker.publish(channel, "message", "m0")
        return await catch_up(broker, channel, largest, stream())

    replay = with_broker(redis_db.url, test)
    assert b"\nevent: reset\n" in replay
    assert b"unknown" in replay


def test_one_subscription_per_channel_and_the_same_bytes_for_every_subscriber(
    redis_db: RedisServer,
):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[EventStream], int]:
        streams = [stream() for _ in range(20)]
        await asyncio.gather(*(catch_up(broker, channel, None, each) for each in streams))
        await broker.publish(channel, "message", "hello")
        await until(lambda: all(each.pending for each in streams))
        async with Redis.from_url(redis_db.url) as admin:
            subscribed = (await admin.pubsub_numsub(live_key(channel)))[0][1]
        return streams, subscribed

    streams, subscribed = with_broker(redis_db.url, test)
    assert subscribed == 1, "one SUBSCRIBE for the channel, not one per subscriber"
    first = streams[0].pending[0]
    assert first.endswith(b"data: hello\n\n")
    assert all(each.pending[0] is first for each in streams), "encoded once, shared"


def test_a_channel_is_unsubscribed_a_moment_after_its_last_subscriber_leaves(
    redis_db: RedisServer,
):
    channel = new_channel()

    async def numsub(admin: Redis) -> int:
        return int((await admin.pubsub_numsub(live_key(channel)))[0][1])

    async def test(broker: RedisBroker) -> tuple[int, int, int]:
        subscriptions = [broker.subscribe(channel, stream()) for _ in range(3)]
        for each in subscriptions:
            async for _ in broker.catch_up(each, None):
                pass
        async with Redis.from_url(redis_db.url) as admin:
            while_subscribed = await numsub(admin)
            for each in subscriptions:
                broker.unsubscribe(each)
            await asyncio.sleep(0.5)
            lingering = await numsub(admin)  # a reload would come back now: kept
            for _ in range(100):
                await asyncio.sleep(0.1)
                if not await numsub(admin):
                    break
            return while_subscribed, lingering, await numsub(admin)

    assert with_broker(redis_db.url, test) == (1, 1, 0)


def test_identical_history_reads_are_coalesced(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[bytes], int]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(10)]
        await catch_up(broker, channel, None, stream())  # the channel is subscribed
        async with Redis.from_url(redis_db.url) as admin:
            await admin.config_resetstat()
            replays = await asyncio.gather(
                *(catch_up(broker, channel, ids[2], stream()) for _ in range(50))
            )
            stats = await admin.info("commandstats")
        return replays, int(stats.get("cmdstat_xrange", {}).get("calls", 0))

    replays, xrange_calls = with_broker(redis_db.url, test)
    assert len(set(replays)) == 1 and replays[0].count(b"data: m") == 7
    assert xrange_calls == 1, "50 identical resumes, one history read"


def test_redis_connections_stay_few_however_many_channels_are_subscribed(redis_db: RedisServer):
    """300 channels with a subscriber each, on one worker: at most 8 connections to Redis."""
    channels = [new_channel() for _ in range(300)]

    async def test(broker: RedisBroker) -> tuple[int, list[EventStream]]:
        streams = [stream() for _ in channels]
        await asyncio.gather(
            *(catch_up(broker, c, None, s) for c, s in zip(channels, streams, strict=True))
        )
        await asyncio.gather(*(broker.publish(channel, "message", "hi") for channel in channels))
        await until(lambda: all(each.pending or each.closed for each in streams), timeout=10)
        return await connections(redis_db.url), streams

    clients, streams = with_broker(redis_db.url, test)
    assert sum(bool(each.pending) for each in streams) == len(channels)
    assert clients <= 8
