"""The Redis broker against a real redis-server: ids, one reader per channel, coalescing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from {{ cookiecutter.project_slug }}.broker.redis import RedisBroker
from {{ cookiecutter.project_slug }}.stream import EventStream

from redis_server import RedisServer
from sse_client import new_channel

T = TypeVar("T")


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


def stream(max_pending: int = 64) -> EventStream:
    return EventStream(never, max_pending)


def with_broker(url: str, test: Callable[[RedisBroker], Awaitable[T]]) -> T:
    async def run() -> T:
        broker = RedisBroker(url=url, history_size=100, block_ms=200)
        await broker.start()
        try:
            return await asyncio.wait_for(test(broker), 20)
        finally:
            await broker.stop()

    return asyncio.run(run())


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - polling on purpose
        await asyncio.sleep(0.02)


def test_ids_are_redis_stream_ids_and_replay_reads_them(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[str], bytes]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(4)]
        replay = await broker.catch_up(broker.subscribe(channel, stream()), ids[0])
        return ids, replay

    ids, replay = with_broker(redis_db.url, test)
    assert all(re.fullmatch(r"\d+-\d+", each) for each in ids)
    assert replay == b"".join(f"id: {i}\ndata: m{n}\n\n".encode() for n, i in enumerate(ids) if n)


def test_the_largest_id_redis_allows_is_an_unknown_id_not_an_error(redis_db: RedisServer):
    channel = new_channel()
    largest = "18446744073709551615-18446744073709551615"

    async def test(broker: RedisBroker) -> bytes:
        await broker.publish(channel, "message", "m0")
        return await broker.catch_up(broker.subscribe(channel, stream()), largest)

    replay = with_broker(redis_db.url, test)
    assert b"\nevent: reset\n" in replay
    assert b"unknown" in replay


def test_one_reader_per_channel_and_the_same_bytes_for_every_subscriber(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[EventStream], int, int]:
        streams = [stream() for _ in range(20)]
        for each in streams:
            await broker.catch_up(broker.subscribe(channel, each), None)
        await broker.publish(channel, "message", "hello")
        await until(lambda: all(each.pending for each in streams))
        readers = len(broker._readers)
        async with Redis.from_url(redis_db.url) as admin:
            clients = await admin.client_list()
        blocked = sum(1 for client in clients if client.get("cmd") == "xread")
        return streams, readers, blocked

    streams, readers, blocked = with_broker(redis_db.url, test)
    assert readers == 1
    assert blocked <= 1, "one blocking XREAD for the channel, not one per subscriber"
    first = streams[0].pending[0]
    assert first.endswith(b"data: hello\n\n")
    assert all(each.pending[0] is first for each in streams), "encoded once, shared"


def test_a_channel_reader_stops_when_its_last_subscriber_leaves(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> int:
        subscriptions = [broker.subscribe(channel, stream()) for _ in range(3)]
        for each in subscriptions:
            await broker.catch_up(each, None)
        assert len(broker._readers) == 1
        for each in subscriptions:
            broker.unsubscribe(each)
        await until(lambda: not broker._readers)
        return len(broker._readers)

    assert with_broker(redis_db.url, test) == 0


def test_identical_history_reads_are_coalesced(redis_db: RedisServer):
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[bytes], int]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(10)]
        async with Redis.from_url(redis_db.url) as admin:
            await admin.config_resetstat()
            replays = await asyncio.gather(
                *(broker.catch_up(broker.subscribe(channel, stream()), ids[2]) for _ in range(50))
            )
            stats = await admin.info("commandstats")
        return replays, int(stats.get("cmdstat_xrange", {}).get("calls", 0))

    replays, xrange_calls = with_broker(redis_db.url, test)
    assert len(set(replays)) == 1 and replays[0].count(b"data: m") == 7
    assert xrange_calls == 1, "50 identical resumes, one history read"


def test_messages_published_while_history_is_read_arrive_once(redis_db: RedisServer):
    """The seam: live messages that overlap the history read are neither lost nor doubled."""
    channel = new_channel()

    async def test(broker: RedisBroker) -> tuple[list[str], bytes]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(3)]
        read = broker._read

        async def read_then_publish(name: str, after: str):  # type: ignore[no-untyped-def]
            ids.append(await broker.publish(channel, "message", "before the snapshot"))
            replay = await read(name, after)
            ids.append(await broker.publish(channel, "message", "after the snapshot"))
            await asyncio.sleep(0.5)  # the reader delivers it meanwhile: held, then sent
            return replay

        broker._read = read_then_publish  # type: ignore[method-assign]
        subscription = broker.subscribe(channel, stream())
        frames = await broker.catch_up(subscription, ids[0])
        return ids, frames

    ids, frames = with_broker(redis_db.url, test)
    got = re.findall(rb"^id: (\S+)$", frames, flags=re.MULTILINE)
    assert [each.decode() for each in got] == ids[1:]


def test_redis_connections_stay_few_however_many_channels_are_subscribed(redis_db: RedisServer):
    """300 channels with a subscriber each, on one worker: at most 8 connections to Redis."""
    channels = [new_channel() for _ in range(300)]

    async def test(broker: RedisBroker) -> tuple[int, list[EventStream]]:
        streams = [stream() for _ in channels]
        subscriptions = [broker.subscribe(c, s) for c, s in zip(channels, streams, strict=True)]
        await asyncio.gather(*(broker.catch_up(each, None) for each in subscriptions))
        for channel in channels:
            await broker.publish(channel, "message", "hello")
        await until(lambda: all(each.pending or each.closed for each in streams), timeout=10)
        async with Redis.from_url(redis_db.url) as admin:
            clients = int((await admin.info("clients"))["connected_clients"]) - 1
        return clients, streams

    clients, streams = with_broker(redis_db.url, test)
    assert sum(bool(each.pending) for each in streams) == len(channels)
    assert clients <= 8
