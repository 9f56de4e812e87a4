"""The memory broker on its own: ids, the history ring, fan-out, resets."""

from __future__ import annotations

import asyncio
import re

import pytest

from {{ cookiecutter.project_slug }}.broker.base import BrokerUnavailable, parse_id
from {{ cookiecutter.project_slug }}.broker.memory import MemoryBroker
from {{ cookiecutter.project_slug }}.delivery import EventStream, ReceiveStream


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


def stream(max_pending: int = 16) -> EventStream:
    return ReceiveStream(never, max_pending)


def test_ids_increase_and_are_never_issued_twice():
    async def run() -> list[str]:
        broker = MemoryBroker(history_size=10)
        return [await broker.publish(channel, "message", "x") for channel in "aab"]

    a1, a2, b1 = asyncio.run(run())
    assert parse_id(a1) < parse_id(a2) < parse_id(b1)


def test_the_least_recently_published_channel_without_subscribers_is_forgotten():
    async def run() -> tuple[list[str], bytes]:
        broker = MemoryBroker(history_size=10, max_channels=2)
        await broker.catch_up(broker.subscribe("busy", stream()), None)
        old = await broker.publish("old", "message", "from the first 'old'")
        await broker.publish("busy", "message", "x")
        await broker.publish("idle", "message", "x")  # the third: "old" goes
        await broker.publish("new", "message", "x")  # the fourth: "idle" goes, not "busy"
        kept = list(broker.channels)
        # "old" made again: its new history must not pass for the one the client saw.
        await broker.publish("old", "message", "from the second 'old'")
        resumed = await broker.catch_up(broker.subscribe("old", stream()), old)
        return kept, resumed

    kept, resumed = asyncio.run(run())
    assert kept == ["busy", "new"]
    assert b"event: reset" in resumed and b"second" not in resumed


def test_resuming_a_forgotten_channel_gets_a_reset_not_a_silent_gap():
    async def run() -> tuple[bytes, bytes, bytes]:
        broker = MemoryBroker(history_size=10, max_channels=1)
        ids = [await broker.publish("a", "message", f"m{n}") for n in range(5)]
        later = await broker.publish("b", "message", "x")  # "a" is forgotten
        gap = await broker.catch_up(broker.subscribe("a", stream()), ids[1])
        # An id newer than everything forgotten missed nothing: no reset for it.
        whole = await broker.catch_up(broker.subscribe("a", stream()), later)
        await broker.publish("b", "message", "y")
        # A channel never published to, resumed from an id it was given as its head.
        fresh = await broker.catch_up(broker.subscribe("c", stream()), later)
        return gap, whole, fresh

    gap, whole, fresh = asyncio.run(run())
    assert b"event: reset" in gap
    assert b"event: reset" not in whole
    assert b"event: reset" not in fresh


def test_a_new_channel_is_refused_when_every_kept_one_has_subscribers():
    async def run() -> None:
        broker = MemoryBroker(history_size=10, max_channels=1)
        await broker.catch_up(broker.subscribe("a", stream()), None)
        await broker.publish("a", "message", "x")
        await broker.publish("b", "message", "x")

    with pytest.raises(BrokerUnavailable, match="SSE_MAX_CHANNELS"):
        asyncio.run(run())


def test_fan_out_pushes_the_same_bytes_to_every_subscriber():
    async def run() -> list[EventStream]:
        broker = MemoryBroker(history_size=10)
        streams = [stream() for _ in range(3)]
        for each in streams:
            await broker.catch_up(broker.subscribe("c", each), None)
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
            await broker.catch_up(broker.subscribe("c", each), None)
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
        kept = await broker.catch_up(broker.subscribe("c", stream()), ids[2])
        too_old = await broker.catch_up(broker.subscribe("c", stream()), ids[1])
        other_run = await broker.catch_up(broker.subscribe("c", stream()), "1-1")
        return kept, too_old, other_run

    kept, too_old, other_run = asyncio.run(run())
    assert kept.count(b"data: m") == 3 and b"data: m3" in kept and b"data: m5" in kept
    assert too_old.startswith(b"id: ") and b"event: reset" in too_old
    assert b"event: reset" in other_run and b"restarted" in other_run


def test_a_channel_without_subscribers_is_forgotten_locally():
    async def run() -> MemoryBroker:
        broker = MemoryBroker(history_size=3)
        subscription = broker.subscribe("c", stream())
        await broker.catch_up(subscription, None)
        broker.unsubscribe(subscription)
        return broker

    assert asyncio.run(run()).local == {}


def _ids(frames: bytes) -> list[str]:
    return re.findall(r"^id: (\S+)$", frames.decode(), flags=re.MULTILINE)


def test_messages_held_while_history_is_read_arrive_once_and_in_order():
    """The seam: live messages that overlap the history read are neither lost nor doubled.

    Reading the history is stretched here as a slow read would be: one message is
    published after the subscriber registered and before the snapshot (it is held and in
    the history: sent once), one after the snapshot (held only: it must still be sent).
    """

    async def run() -> tuple[list[str], bytes, EventStream, str]:
        broker = MemoryBroker(history_size=10)
        ids = [await broker.publish("c", "message", f"m{n}") for n in range(3)]
        read = broker.replay

        async def slow_replay(subscription, after):  # type: ignore[no-untyped-def]
            ids.append(await broker.publish("c", "message", "before the snapshot"))
            replay = await read(subscription, after)
            ids.append(await broker.publish("c", "message", "after the snapshot"))
            return replay

        broker.replay = slow_replay  # type: ignore[method-assign]
        subscriber = stream()
        frames = await broker.catch_up(broker.subscribe("c", subscriber), ids[0])
        live = await broker.publish("c", "message", "live")
        return ids, frames, subscriber, live

    ids, frames, subscriber, live = asyncio.run(run())
    assert _ids(frames) == ids[1:]
    assert _ids(subscriber.take()) == [live]  # and from then on, live


def test_messages_held_for_a_new_subscriber_are_all_sent():
    async def run() -> tuple[list[str], bytes]:
        broker = MemoryBroker(history_size=10)
        subscription = broker.subscribe("c", stream())
        ids = [await broker.publish("c", "message", f"m{n}") for n in range(2)]
        return ids, await broker.catch_up(subscription, None)

    ids, frames = asyncio.run(run())
    assert _ids(frames) == ids
