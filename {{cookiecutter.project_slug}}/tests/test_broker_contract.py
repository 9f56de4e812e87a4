"""What every broker promises, tested on the one this project was baked with.

Each test drives the channel source `follow()` (what a subscriber's response runs)
against a real broker: for Redis, the test session's own redis-server, then its own
three-master Redis Cluster.
"""

from __future__ import annotations

import asyncio
import random
import re
import resource
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from itertools import pairwise
from typing import TypeVar

import pytest

from {{ cookiecutter.project_slug }}.broker import BadEventId, Broker, create_broker, parse_id
from {{ cookiecutter.project_slug }}.broker.cursor import format_part, parse_cursor
from {{ cookiecutter.project_slug }}.broker.fanout import Subscribers
from {{ cookiecutter.project_slug }}.broker.messages import format_id
from {{ cookiecutter.project_slug }}.channels import follow, follow_channels, parse_channels
from {{ cookiecutter.project_slug }}.delivery import ReceiveStream
from {{ cookiecutter.project_slug }}.settings import Settings

{% if cookiecutter.broker == "redis" -%}
from redis_cluster import RedisClusterServers
from redis_server import RedisServer
{% endif -%}
from sse_client import new_channel

T = TypeVar("T")
_ID = re.compile(rb"^id: (\S+)$", re.MULTILINE)
_EVENT = re.compile(rb"^event: (\S+)$", re.MULTILINE)


{%- if cookiecutter.broker == "redis" %}


@pytest.fixture(params=["redis", "cluster"])
def settings(request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """The broker on one Redis, then on a three-master Redis Cluster."""
    if request.param == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster_db")
        return lambda **overrides: Settings(redis_url=cluster.url, redis_cluster=True, **overrides)
    redis_db: RedisServer = request.getfixturevalue("redis_db")
    return lambda **overrides: Settings(redis_url=redis_db.url, **overrides)
{%- else %}


@pytest.fixture
def settings() -> Callable[..., Settings]:
    return lambda **overrides: Settings(**overrides)
{%- endif %}


async def with_started(settings: Settings, test: Callable[[Broker], Awaitable[T]]) -> T:
    broker = create_broker(settings)
    await broker.start()
    try:
        return await asyncio.wait_for(test(broker), 60)
    finally:
        await broker.stop()


def with_broker(settings: Settings, test: Callable[[Broker], Awaitable[T]]) -> T:
    return asyncio.run(with_started(settings, test))


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - polling on purpose
        await asyncio.sleep(0.02)


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


class Reader:
    """One subscriber: runs `follow()` and keeps the ids it wrote, as a response would."""

    def __init__(self, broker: Broker, channel: str, after: str | None, queue: int = 100_000):
        self.stream = ReceiveStream(never, queue)
        self.chunks: AsyncIterator[bytes] = follow(
            self.stream, broker=broker, channel=channel, after=after
        )
        self.after = after
        self.ids: list[str] = []
        self.events: list[bytes] = []
        self.live = asyncio.Event()

    async def first(self) -> bytes:
        """Only the first chunk: the client then stops reading, its write blocked."""
        chunk = await anext(self.chunks)
        self.record(chunk)
        return chunk

    async def run(self) -> None:
        async with aclosing(self.chunks) as chunks:
            async for chunk in chunks:
                self.record(chunk)

    def record(self, chunk: bytes) -> None:
        self.ids.extend(each.decode() for each in _ID.findall(chunk))
        self.events.extend(_EVENT.findall(chunk))
        if b": live\n" in chunk:
            self.live.set()


@pytest.fixture
def lagging_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live delivery runs 50 ms behind, in order, as from a reader that cannot keep up."""
    deliver = Subscribers.deliver
    late: deque[tuple[float, Subscribers, object]] = deque()

    def drain() -> None:
        now = asyncio.get_running_loop().time()
        while late and late[0][0] <= now:
            _, subscribers, batch = late.popleft()
            deliver(subscribers, batch)  # type: ignore[arg-type]
        if late:
            asyncio.get_running_loop().call_at(late[0][0], drain)

    def deliver_late(self: Subscribers, batch: object) -> None:
        loop = asyncio.get_running_loop()
        late.append((loop.time() + 0.05, self, batch))
        if len(late) == 1:
            loop.call_at(late[0][0], drain)

    monkeypatch.setattr(Subscribers, "deliver", deliver_late)


@pytest.mark.usefixtures("lagging_delivery")
def test_every_subscriber_gets_each_message_once_in_order_while_the_worker_lags(settings):
    """Resumes by Last-Event-ID while messages pour in and live delivery lags behind.

    Each subscriber must get exactly the messages after its own id, each once, in order:
    none it had, none its replay had, no gap.
    """
    channel = new_channel()
    total, resumers = 6000, 40

    async def test(broker: Broker) -> tuple[list[str], list[Reader]]:
        published = [await broker.publish(channel, "message", f"m{n}") for n in range(200)]
        publishing = True

        async def publish_the_rest(publisher: Broker) -> None:
            while len(published) < total:
                batch = [publisher.publish(channel, "message", "x" * 50) for _ in range(25)]
                published.extend(await asyncio.gather(*batch))

        async def publisher() -> None:
            nonlocal publishing
            if broker.name == "memory":
                await publish_the_rest(broker)
            else:
                # Another process's worth of publishing: its own loop and broker, so the
                # messages keep coming while this worker's loop is blocked.
                await asyncio.to_thread(asyncio.run, with_started(other, publish_the_rest))
            publishing = False

        async def busy() -> None:
            # The loop is blocked on and off, as by a busy worker: its live delivery falls
            # behind what Redis has, and behind what a fresh history read sees.
            while publishing:
                time.sleep(0.004)  # noqa: ASYNC251 - blocking the loop is the point
                await asyncio.sleep(0.001)

        readers: list[Reader] = []
        tasks = [asyncio.create_task(publisher()), asyncio.create_task(busy())]
        rng = random.Random(11)
        for _ in range(resumers):
            await asyncio.sleep(rng.uniform(0.005, 0.02))
            after = published[max(0, len(published) - rng.randint(1, 300))]
            reader = Reader(broker, channel, after)
            readers.append(reader)
            tasks.append(asyncio.create_task(reader.run()))
        await asyncio.gather(*tasks[:2])
        last = max(published, key=parse_id)
        await until(
            lambda: all(reader.stream.closed or reader.ids[-1:] == [last] for reader in readers),
            timeout=15,
        )
        for reader in readers:
            reader.stream.close("gone")
        await asyncio.gather(*tasks[2:])
        return published, readers

    other = settings(history_size=10_000)
    published, readers = with_broker(settings(history_size=10_000), test)
    in_order = sorted(published, key=parse_id)
    wrong = []
    for reader in readers:
        expected = [each for each in in_order if parse_id(each) > parse_id(reader.after)]
        if reader.ids != expected or reader.stream.close_reason != "gone":
            wrong.append((reader.after, reader.stream.close_reason, len(reader.ids), len(expected)))
    assert not wrong, f"{len(wrong)} of {resumers} subscribers got a wrong sequence: {wrong[:3]}"


def test_a_resume_after_a_gap_beyond_the_history_is_a_reset_never_silence(settings):
    channel = new_channel()

    async def test(broker: Broker) -> tuple[list[str], Reader]:
        ids = [await broker.publish(channel, "message", f"m{n}") for n in range(40)]
        reader = Reader(broker, channel, ids[0])
        await reader.first()
        return ids, reader

    ids, reader = with_broker(settings(history_size=5), test)
    assert reader.events == [b"reset"]
    # The reset carries an id the client resumes from next time: the newest.
    assert reader.ids == [ids[-1]]


def rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_a_catch_up_is_written_in_slices_so_readers_that_stall_hold_little(settings):
    """20 clients resume from the start of 18 MB of history and do not read."""
    channel = new_channel()
    big = "x" * 60_000

    async def test(broker: Broker) -> tuple[list[int], int]:
        ids = [await broker.publish(channel, "message", big) for _ in range(300)]
        before = rss()
        readers = [Reader(broker, channel, ids[0]) for _ in range(20)]
        firsts = [len(await reader.first()) for reader in readers]
        grown = rss() - before
        for reader in readers:
            reader.stream.close("gone")
            await reader.chunks.aclose()  # type: ignore[attr-defined]
        return firsts, grown

    firsts, grown = with_broker(settings(history_size=1000, max_message_bytes=65536), test)
    assert max(firsts) <= 1024 * 1024, "the first write is one slice, not the whole replay"
    # Whole replays would be 20 x 18 MB.
    assert grown < 60 * 1024 * 1024, f"grew by {grown / 2**20:.0f} MB"


def test_a_replay_past_the_byte_budget_becomes_a_reset_then_live(settings):
    channel = new_channel()
    big = "x" * 60_000

    async def test(broker: Broker) -> tuple[list[str], Reader]:
        ids = [await broker.publish(channel, "message", big) for _ in range(100)]
        reader = Reader(broker, channel, ids[0])
        task = asyncio.create_task(reader.run())
        await asyncio.wait_for(reader.live.wait(), 10)
        ids.append(await broker.publish(channel, "message", "live"))
        await until(lambda: reader.ids[-1:] == ids[-1:])
        reader.stream.close("gone")
        await task
        return ids, reader

    ids, reader = with_broker(settings(history_size=1000, replay_max_bytes=1_000_000), test)
    assert reader.events == [b"reset"]
    reset_at = reader.ids.index(ids[-2])  # the reset names the newest id it skipped to
    replayed = reader.ids[:reset_at]
    assert 0 < len(replayed) <= 17 and replayed == ids[1 : 1 + len(replayed)]
    assert reader.ids[reset_at:] == ids[-2:]


class ChannelsReader(Reader):
    """A subscriber of several channels on one stream: per channel, the ids it got."""

    def __init__(self, broker: Broker, channels: list[str], after: list[str] | None):
        self.stream = ReceiveStream(never, 100_000)
        keys = None if after is None else [parse_id(each) for each in after]
        self.chunks = follow_channels(self.stream, broker=broker, channels=channels, after=keys)
        self.channels = channels
        self.got: dict[str, list[str]] = {channel: [] for channel in channels}
        self.cursors: list[str] = []
        self.events = []
        self.live = asyncio.Event()

    def record(self, chunk: bytes) -> None:
        for event in chunk.split(b"\n\n"):
            cursor, kind = _ID.search(event), _EVENT.search(event)
            if cursor is None or kind is None:
                continue
            self.cursors.append(cursor[1].decode())
            name = kind[1].decode().partition(":")[0]
            position = parse_cursor(self.cursors[-1], len(self.channels))
            self.got[name].append(format_id(position[self.channels.index(name)]))
        if b": live\n" in chunk:
            self.live.set()


def cursor_of(ids: list[str]) -> str:
    return ",".join(format_part(parse_id(each)) for each in ids)


def test_bad_multi_channel_resume_ids_are_refused():
    good = cursor_of(["1-2", "3-4"])
    assert parse_channels(["a", "b"], good) == [(1, 2), (3, 4)]
    # Too few, too many, empty parts, not base 36, past 64 bits, a single-channel id.
    for bad in ["1-2", "1-2,3-4,5-6", "1-2,", ",1-2", "1-2,3-G", "1-2,zzzzzzzzzzzzz-0", ""]:
        with pytest.raises(BadEventId):
            parse_channels(["a", "b"], bad)
    for channels in [[], ["a", "a"], ["a/b"], [f"c{n}" for n in range(17)]]:
        with pytest.raises(ValueError):
            parse_channels(channels, None)


@pytest.mark.usefixtures("lagging_delivery")
def test_several_channels_on_one_stream_resume_exactly_from_one_id(settings):
    """Each channel of the stream gets exactly what follows its own part of the cursor."""
    channels = [new_channel() for _ in range(3)]

    async def test(broker: Broker) -> tuple[dict[str, list[str]], list[ChannelsReader]]:
        published: dict[str, list[str]] = {channel: [] for channel in channels}

        async def publish(n: int) -> None:
            channel = channels[n % 3]
            published[channel].append(await broker.publish(channel, "tick", f"m{n}"))

        for n in range(60):
            await publish(n)
        fresh = ChannelsReader(broker, channels, None)
        readers = [fresh]
        tasks = [asyncio.create_task(fresh.run())]
        await asyncio.wait_for(fresh.live.wait(), 10)
        rng = random.Random(12)
        for n in range(60, 600):
            await publish(n)
            if n % 50 == 0:  # a resume from somewhere in each channel's history
                after = [rng.choice(published[channel]) for channel in channels]
                reader = ChannelsReader(broker, channels, after)
                reader.after = after  # type: ignore[attr-defined]
                readers.append(reader)
                tasks.append(asyncio.create_task(reader.run()))
        newest = {channel: ids[-1] for channel, ids in published.items()}
        await until(
            lambda: all(r.got[c][-1:] == [newest[c]] for r in readers for c in channels), 15
        )
        for reader in readers:
            reader.stream.close("gone")
        await asyncio.gather(*tasks)
        return published, readers

    published, readers = with_broker(settings(history_size=1000), test)
    fresh, resumed = readers[0], readers[1:]
    for index, channel in enumerate(channels):
        # The fresh reader: every message published once it was live, each once, in order.
        assert fresh.got[channel] == published[channel][20:], channel
        for reader in resumed:
            after = parse_id(reader.after[index])  # type: ignore[attr-defined]
            expected = [each for each in published[channel] if parse_id(each) > after]
            assert reader.got[channel] == expected
    # A later cursor resumes where the reader stood: each event's cursor only moves on.
    for reader in readers:
        keys = [parse_cursor(each, 3) for each in reader.cursors]
        steps = pairwise(keys)
        assert all(all(a <= b for a, b in zip(x, y, strict=True)) for x, y in steps)
