"""The memory broker on its own: ids, the history ring, fan-out, resets."""

from __future__ import annotations

import asyncio

import pytest

from {{ cookiecutter.project_slug }}.broker.base import Broker, BrokerUnavailable
from {{ cookiecutter.project_slug }}.broker.memory import MemoryBroker
from {{ cookiecutter.project_slug }}.broker.messages import parse_id
from {{ cookiecutter.project_slug }}.delivery import EventStream, ReceiveStream


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


def stream(max_pending: int = 16) -> EventStream:
    return ReceiveStream(never, max_pending)


async def catch_up(broker: Broker, channel: str, after: str | None, each: EventStream) -> bytes:
    """Register `each` and catch it up: the chunks it would write before going live."""
    subscription = broker.subscribe(channel, each)
    return b"".join([chunk async for chunk in broker.catch_up(subscription, after)])


def test_ids_increase_and_are_never_issued_twice():
    async def run() -> list[str]:
        broker = MemoryBroker(history_size=10)
        return [await broker.publish(channel, "message", "x") for channel in "aab"]

    a1, a2, b1 = asyncio.run(run())
    assert parse_id(a1) < parse_id(a2) < parse_id(b1)


def test_the_least_recently_published_channel_without_subscribers_is_forgotten():
    async def run() -> tuple[list[str], bytes]:
        broker = MemoryBroker(history_size=10, max_channels=2)
        await catch_up(broker, "busy", None, stream())
        old = await broker.publish("old", "message", "from the first 'old'")
        await broker.publish("busy", "message", "x")
        await broker.publish("idle", "message", "x")  # the third: "old" goes
        await broker.publish("new", "message", "x")  # the fourth: "idle" goes, not "busy"
        kept = list(broker.channels)
        # "old" made again: its new history must not pass for the one the client saw.
        await broker.publish("old", "message", "from the second 'old'")
        resumed = await catch_up(broker, "old", old, stream())
        return kept, resumed

    kept, resumed = asyncio.run(run())
    assert kept == ["busy", "new"]
    assert b"event: reset" in resumed and b"second" not in resumed


def test_resuming_a_forgotten_channel_gets_a_reset_not_a_silent_gap():
    async def run() -> tuple[bytes, bytes, bytes]:
        broker = MemoryBroker(history_size=10, max_channels=1)
        ids = [await broker.publish("a", "message", f"m{n}") for n in range(5)]
        later = await broker.publish("b", "message", "x")  # "a" is forgotten
        gap = await catch_up(broker, "a", ids[1], stream())
        # An id newer than everything forgotten missed nothing: no reset for it.
        whole = await catch_up(broker, "a", later, stream())
        await broker.publish("b", "message", "y")
        # A channel never published to, resumed from an id it was given as its head.
        fresh = await catch_up(broker, "c", later, stream())
        return gap, whole, fresh

    gap, whole, fresh = asyncio.run(run())
    assert b"event: reset" in gap
    assert b"event: reset" not in whole
    assert b"event: reset" not in fresh


def test_a_new_channel_is_refused_when_every_kept_one_has_subscribers():
    async def run() -> None:
        broker = MemoryBroker(history_size=10, max_channels=1)
        await catch_up(broker, "a", None, stream())
        await broker.publish("a", "message", "x")
        await broker.publish("b", "message", "x")

    with pytest.raises(BrokerUnavailable, match="SSE_MAX_CHANNELS"):
        asyncio.run(run())


def test_fan_out_pushes_the_same_bytes_to_every_subscriber():
    async def run() -> list[EventStream]:
        broker = MemoryBroker(history_size=10)
        streams = [stream() for _ in range(3)]
        for each in streams:
            await catch_up(broker, "c", None, each)
        await broker.publish("c", "message", "hello")
        return streams

    streams = asyncio.run(run())
    frames = [each.pending[0] for each in streams]
    assert frames[0].startswith(b"id: ") and frames[0].endswith(b"data: hello\n\n")
    # Encoded once: one bytes object, shared.
    assert all(frame is frames[0] for frame in frames)


def test_a_full_subscriber_is_closed_not_waited_for():
    async def run() -> tuple[EventStream, EventStream]:
        broker = MemoryBroker(history_size=100)
        slow, fast = stream(max_pending=3), stream(max_pending=100)
        for each in (slow, fast):
            await catch_up(broker, "c", None, each)
        for n in range(10):
            await broker.publish("c", "message", str(n))
        return slow, fast

    slow, fast = asyncio.run(run())
    assert slow.closed and slow.close_reason == "slow"
    assert len(fast.pending) == 10 and not fast.closed


def test_history_keeps_the_last_n_and_resets_before_them():
    async def run() -> tuple[bytes, bytes, bytes]:
        broker = MemoryBroker(history_size=3)
        ids = [await broker.publish("c", "message", f"m{n}") for n in range(6)]
        kept = await catch_up(broker, "c", ids[2], stream())
        too_old = await catch_up(broker, "c", ids[1], stream())
        other_run = await catch_up(broker, "c", "1-1", stream())
        return kept, too_old, other_run

    kept, too_old, other_run = asyncio.run(run())
    assert kept.count(b"data: m") == 3 and b"data: m3" in kept and b"data: m5" in kept
    assert too_old.startswith(b"id: ") and b"event: reset" in too_old
    assert b"event: reset" in other_run and b"restarted" in other_run


def test_a_channel_without_subscribers_is_forgotten_locally():
    async def run() -> MemoryBroker:
        broker = MemoryBroker(history_size=3)
        subscription = broker.subscribe("c", stream())
        async for _ in broker.catch_up(subscription, None):
            pass
        broker.unsubscribe(subscription)
        return broker

    assert asyncio.run(run()).local == {}


def test_all_histories_together_keep_within_the_byte_budget():
    """Many channels each under SSE_HISTORY_SIZE still cannot outgrow the worker's budget."""

    async def run() -> tuple[MemoryBroker, bytes, bytes]:
        broker = MemoryBroker(history_size=1000, history_max_bytes=1024 * 1024)
        first = await broker.publish("c0", "message", "x" * 10_000)
        for n in range(400):
            await broker.publish(f"c{n % 40}", "message", "x" * 10_000)
        gone = await catch_up(broker, "c0", first, stream())
        newest = await broker.publish("c39", "message", "x")
        kept = await catch_up(broker, "c39", newest, stream())
        return broker, gone, kept

    broker, gone, kept = asyncio.run(run())
    frames = sum(len(m.frame) for h in broker.channels.values() for m in h.ring)
    assert frames == broker.bytes <= 1024 * 1024
    assert b"event: reset" in gone, "a message pushed out is a reset for who resumes before it"
    assert kept == b""
