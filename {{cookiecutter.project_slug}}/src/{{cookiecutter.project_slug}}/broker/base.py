"""What every broker offers: publish, history by id, and live fan-out to local streams.

A subscriber joins in steps, so that nothing falls between history and live delivery:
1. it is registered: live messages for it are held from then on (a bounded number);
2. `ready()`: live delivery of the channel reaches this worker (Redis: the channel's
   SUBSCRIBE is confirmed), so everything published from now on arrives here;
3. history after its Last-Event-ID is read and written a slice at a time, each slice
   waiting for the client to take the one before (the same backpressure and stall rules
   as live delivery);
4. once a read reached the end of the history while nothing held was dropped, the held
   messages newer than what it wrote are written and it is live.
Throughout, a subscription writes only messages newer than the newest it has written
(see fanout.py): a replay and a lagging live reader may overlap, a client never sees it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence

from ..stream import EventStream
from .cursor import Cursor
from .fanout import Subscribers, Subscription
from .messages import Message, Page, format_id, parse_id

#: A catch-up is written in slices of about this size, one write each.
SLICE_BYTES = 256 * 1024
#: History is read in pages of about this many bytes (judged by the last page's), so a
#: client that stops reading holds about one page, not its whole catch-up.
PAGE_BYTES = 256 * 1024
FIRST_PAGE = 8
MAX_PAGE = 1000


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the reason is safe to show to clients."""


class Broker(ABC):
    """One per worker process; the app calls `start` and `stop` from its lifespan."""

    name: str

    def __init__(self, *, replay_max_bytes: int) -> None:
        #: This worker's subscribers, by channel; a channel with none has no entry.
        self.local: dict[str, Subscribers] = {}
        #: A catch-up longer than this becomes a reset: one client cannot ask for more.
        self.replay_max_bytes = replay_max_bytes

    async def start(self) -> None:  # noqa: B027 - optional: not every broker connects
        """Connect; raise BrokerUnavailable with a readable reason if that fails."""

    async def stop(self) -> None:  # noqa: B027 - optional, like start
        """Release connections and tasks."""

    async def check(self) -> str | None:
        """None when healthy, else why not (for /healthz)."""
        return None

    @property
    def available(self) -> bool:
        """False while the broker is known to be unreachable (new streams retry later)."""
        return True

    @abstractmethod
    async def publish(self, channel: str, event: str, data: str) -> str:
        """Store the message and return its id; only then is it acknowledged."""

    @abstractmethod
    async def page(self, channel: str, after: str, count: int) -> Page:
        """At most `count` messages of the history after `after`, oldest first."""

    @abstractmethod
    async def head(self, channel: str) -> str:
        """The channel's newest id."""

    @abstractmethod
    async def ready(self, channel: str) -> str:
        """Return once every message published from now on reaches this worker's
        subscribers of `channel`; the newest id delivered to them so far."""

    def _watch(self, channel: str) -> None:  # noqa: B027 - a hook, often not needed
        """The channel's first local subscriber arrived."""

    def _unwatch(self, channel: str) -> None:  # noqa: B027 - a hook, like _watch
        """The channel's last local subscriber left."""

    def subscribe(
        self, channel: str, stream: EventStream, cursor: Cursor | None = None, index: int = 0
    ) -> Subscription:
        """Register `stream`: live messages are held for it until `catch_up` ends.

        A stream of several channels subscribes to each, with its cursor (see cursor.py).
        """
        subscription = Subscription(channel, stream, cursor, index)
        subscribers = self.local.get(channel)
        if subscribers is None:
            subscribers = self.local[channel] = Subscribers()
            self._watch(channel)
        subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self.local.get(subscription.channel)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self.local[subscription.channel]
                self._unwatch(subscription.channel)

    async def catch_up(self, subscription: Subscription, after: str | None) -> AsyncIterator[bytes]:
        """The chunks to write before live delivery: history, then what arrived meanwhile.

        Once it is exhausted the subscriber is live: later messages are pushed to its
        stream. Raises BrokerUnavailable if the broker cannot be reached.
        """
        position = await self.ready(subscription.channel)
        if after is None:
            # Everything held so far is at or before the position: none of it is sent.
            subscription.last = parse_id(position)
        else:
            subscription.last = parse_id(after)
            async for chunk in self._replay(subscription):
                yield chunk
        stream = subscription.stream
        if stream.closed:
            return
        subscribers = self.local.get(subscription.channel)
        if subscribers is None or not subscribers.go_live(subscription):
            stream.close("broker")
            return
        held = subscription.take_held()
        if held:
            yield subscription.render(held)

    async def _replay(self, subscription: Subscription) -> AsyncIterator[bytes]:
        """History after `subscription.last`, in slices, until it is caught up."""
        channel, stream = subscription.channel, subscription.stream
        count, sent, skipped = FIRST_PAGE, 0, False
        while not stream.closed:
            # Live messages held from here on, with this read, cover everything.
            subscription.held.clear()
            subscription.overflowed = False
            page = await self.page(channel, format_id(subscription.last), count)
            if page.reset is not None:
                subscription.last = parse_id(page.head)
                yield subscription.reset(page.reset, page.head)
            for chunk, size, newest in _slices(subscription, page.messages):
                sent += size
                if sent > self.replay_max_bytes:
                    if skipped:  # a second time: the client cannot keep up at all
                        stream.close("slow")
                        return
                    skipped, sent = True, 0
                    reason = (
                        f"the history after {format_id(subscription.last)} is longer than a "
                        f"catch-up may send ({self.replay_max_bytes} bytes)"
                    )
                    head = await self.head(channel)
                    subscription.last = parse_id(head)
                    yield subscription.reset(reason, head)
                    break
                subscription.last = newest.key
                yield chunk
                if stream.closed:
                    return
            else:
                if page.last and not subscription.overflowed:
                    return
                count = _next_count(page.messages)


def _slices(
    subscription: Subscription, messages: Sequence[Message]
) -> Iterator[tuple[bytes, int, Message]]:
    """The frames of `messages` in slices of about SLICE_BYTES: (bytes, size, newest).

    Made one slice at a time, as it is written: never a copy of the whole page.
    """
    start, size = 0, 0
    for index, message in enumerate(messages):
        size += len(message.frame)
        if size >= SLICE_BYTES or index == len(messages) - 1:
            yield subscription.render(messages[start : index + 1]), size, message
            start, size = index + 1, 0


def _next_count(messages: Sequence[Message]) -> int:
    """A page size that reads about PAGE_BYTES, judging by the messages just read."""
    if not messages:
        return FIRST_PAGE
    average = sum(len(message.frame) for message in messages) / len(messages)
    return max(1, min(MAX_PAGE, int(PAGE_BYTES / average)))
