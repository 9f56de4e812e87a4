"""What every broker offers: publish, history by id, and live fan-out to local streams.

A subscriber joins in two steps so that nothing falls between history and live delivery:
it is registered first (live messages are held for it from then on), then history after
its Last-Event-ID is read, then the held messages not already in that history are
appended and it goes live. See `Broker.catch_up`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ..sse import encode_event
from ..stream import EventStream
from .fanout import Subscribers

# Ids look like Redis stream ids, "<milliseconds>-<sequence>", for both brokers: ordered,
# and the memory broker's first part names the process run that issued them.
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})\Z")
_MAX_PART = 2**64 - 1
DEFAULT_EVENT = "message"


class BadEventId(ValueError):
    pass


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the reason is safe to show to clients."""


def parse_id(text: str) -> tuple[int, int]:
    """An id as a sortable pair; BadEventId if it is not one this service issues."""
    match = _ID.match(text)
    # Both parts are unsigned 64-bit numbers in Redis, which refuses larger ones.
    if match is None or max(int(match[1]), int(match[2])) > _MAX_PART:
        raise BadEventId("Last-Event-ID must be an id sent by this stream, like 1700000000000-5")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    event: str
    data: str
    #: The complete SSE frame, encoded once and shared by every subscriber and replay.
    frame: bytes


def make_message(id: str, event: str, data: str) -> Message:  # noqa: A002 - the SSE field
    # `event: message` is what a frame without an event line means; leave it out.
    name = None if event == DEFAULT_EVENT else event
    return Message(id, event, data, encode_event(data, id=id, event=name))


@dataclass(frozen=True, slots=True)
class Replay:
    """History after an id, as one snapshot."""

    messages: Sequence[Message]
    #: The channel's newest id when the snapshot was taken.
    head: str
    #: Why the id could not be resumed from (too old, unknown); None if it could.
    reset: str | None = None


def reset_frame(replay: Replay) -> bytes:
    # The reset carries the head id, so the client's next reconnect resumes from there
    # instead of being told the same thing again.
    return encode_event(replay.reset or "", id=replay.head, event="reset")


@dataclass(slots=True)
class Subscription:
    channel: str
    stream: EventStream
    #: Broker-specific: where live delivery stood when this subscriber was registered.
    floor: str | None = None


class Broker(ABC):
    """One per worker process; the app calls `start` and `stop` from its lifespan."""

    name: str

    def __init__(self) -> None:
        #: This worker's subscribers, by channel; a channel with none has no entry.
        self.local: dict[str, Subscribers] = {}

    async def start(self) -> None:  # noqa: B027 - optional: not every broker connects
        """Connect; raise BrokerUnavailable with a readable reason if that fails."""

    async def stop(self) -> None:  # noqa: B027 - optional, like start
        """Release connections and tasks."""

    async def check(self) -> str | None:
        """None when healthy, else why not (for /healthz)."""
        return None

    @property
    def available(self) -> bool:
        """False while the broker is known to be unreachable (new streams get 503)."""
        return True

    @abstractmethod
    async def publish(self, channel: str, event: str, data: str) -> str:
        """Store the message and return its id; only then is it acknowledged."""

    @abstractmethod
    async def replay(self, subscription: Subscription, after: str) -> Replay:
        """History after `after`, as seen after `subscription` was registered."""

    async def ready(self, subscription: Subscription) -> None:  # noqa: B027 - often at once
        """Return once every message published from now on will reach `subscription`."""

    def _watch(self, channel: str) -> str | None:
        """Called as a subscriber registers; returns its floor (see Subscription)."""
        return None

    def subscribe(self, channel: str, stream: EventStream) -> Subscription:
        """Register `stream`: live messages are held for it until `catch_up`."""
        subscribers = self.local.get(channel)
        if subscribers is None:
            subscribers = self.local[channel] = Subscribers()
        subscribers.add(stream)
        return Subscription(channel, stream, self._watch(channel))

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self.local.get(subscription.channel)
        if subscribers is not None:
            subscribers.discard(subscription.stream)
            if not subscribers:
                del self.local[subscription.channel]

    async def catch_up(self, subscription: Subscription, after: str | None) -> bytes:
        """The frames to write before live delivery: history, then what arrived meanwhile.

        On return the subscriber is live: later messages are pushed to its stream.
        """
        if after is not None:
            replay: Replay | None = await self.replay(subscription, after)
        else:
            replay = None
            await self.ready(subscription)
        subscribers = self.local.get(subscription.channel)
        if subscribers is None or subscription.stream.closed:
            return b""
        held = subscribers.go_live(subscription.stream)
        if held is None:  # dropped while reading history (too slow, or the broker was lost)
            subscription.stream.close("broker")
            return b""
        if replay is None:
            return b"".join(message.frame for message in held)
        if replay.reset is not None:
            frames, last = [reset_frame(replay)], replay.head
        else:
            frames = [message.frame for message in replay.messages]
            last = replay.messages[-1].id if replay.messages else (after or replay.head)
        # Held messages the history already had would be duplicates: keep only newer ones.
        newest = parse_id(last)
        frames.extend(message.frame for message in held if parse_id(message.id) > newest)
        return b"".join(frames)
