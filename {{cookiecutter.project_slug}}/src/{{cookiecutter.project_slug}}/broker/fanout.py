"""The subscribers of one channel in this worker, and delivery to them.

The rule that keeps every subscriber exact, whatever the lag of live delivery: each
subscription knows the newest id it has written (history, held or live), and delivery
skips everything at or before it. Ids are compared as numbers; frames are encoded once
per message and the same bytes go to every subscriber.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import attrgetter

from ..sse import encode_event
from ..stream import EventStream
from .cursor import Cursor, body
from .messages import Key, Message, parse_id, reset_frame

_KEY = attrgetter("key")


class Subscription:
    """One stream on one channel: catching up on history, then live."""

    __slots__ = ("channel", "cursor", "held", "index", "last", "overflowed", "stream")

    def __init__(
        self, channel: str, stream: EventStream, cursor: Cursor | None = None, index: int = 0
    ) -> None:
        self.channel = channel
        self.stream = stream
        #: On a stream of several channels: its cursor, and this channel's place in it.
        self.cursor = cursor
        self.index = index
        #: The newest id written to the stream (or queued for it) from this channel.
        self.last: Key = (0, 0)
        #: While catching up: live messages delivered meanwhile, in order, at most
        #: `stream.max_pending` of them; the catch-up reads history again past that.
        self.held: list[Message] = []
        self.overflowed = False

    def hold(self, batch: Sequence[Message]) -> None:
        if len(self.held) + len(batch) > self.stream.max_pending:
            self.held.clear()  # history has them: the catch-up reads them from there
            self.overflowed = True
        else:
            self.held.extend(batch)

    def render(self, messages: Sequence[Message]) -> bytes:
        """The frames of `messages`, as this stream writes them."""
        if self.cursor is not None:
            bodies = [body(message, self.channel) for message in messages]
            return self.cursor.render(self.index, messages, bodies)
        if len(messages) == 1:
            return messages[0].frame
        return b"".join(message.frame for message in messages)

    def reset(self, reason: str, head: str) -> bytes:
        """The `reset` event that tells the client it resumes from `head` instead."""
        if self.cursor is None:
            return reset_frame(reason, head)
        self.cursor.advance(self.index, parse_id(head))
        return encode_event(f"{self.channel}: {reason}", id=self.cursor.id, event="reset")

    def take_held(self) -> list[Message]:
        """The held messages newer than `last`; afterwards `last` is the newest of them."""
        newer = [message for message in self.held if message.key > self.last]
        self.held = []
        if newer:
            self.last = newer[-1].key
        return newer


class Subscribers:
    """Streams that are live, and streams still catching up on history."""

    __slots__ = ("joining", "live")

    def __init__(self) -> None:
        self.live: set[Subscription] = set()
        self.joining: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self.live) + len(self.joining)

    def add(self, subscription: Subscription) -> None:
        self.joining.add(subscription)

    def go_live(self, subscription: Subscription) -> bool:
        """Make a joining subscription live; False if it was dropped meanwhile."""
        if subscription not in self.joining:
            return False
        self.joining.discard(subscription)
        self.live.add(subscription)
        return True

    def discard(self, subscription: Subscription) -> None:
        self.live.discard(subscription)
        self.joining.discard(subscription)

    def deliver(self, batch: Sequence[Message]) -> None:
        """Push a batch of messages, in id order, to every stream: one write each.

        Never waits: a stream too far behind closes itself (see EventStream.push).
        """
        if not batch:
            return
        first, newest = batch[0].key, batch[-1].key
        # The frames from message i on, joined once for every subscriber that needs them.
        whole = batch[0].frame if len(batch) == 1 else b"".join(m.frame for m in batch)
        joined: dict[int, bytes] = {0: whole}
        bodies: list[bytes] | None = None  # for streams of several channels, made once
        for subscription in self.live:
            last = subscription.last
            if last < first and subscription.cursor is None:  # the common case: all of it
                subscription.last = newest
                subscription.stream.push(whole)
                continue
            if last >= newest:
                continue  # it has all of them already (from history, or delivered twice)
            start = 0 if last < first else bisect_right(batch, last, key=_KEY)
            subscription.last = newest
            if subscription.cursor is not None:
                if bodies is None:
                    bodies = [body(message, subscription.channel) for message in batch]
                cursor, index = subscription.cursor, subscription.index
                subscription.stream.push(cursor.render(index, batch[start:], bodies[start:]))
                continue
            frames = joined.get(start)
            if frames is None:
                frames = joined[start] = (
                    batch[start].frame
                    if start == len(batch) - 1
                    else b"".join(message.frame for message in batch[start:])
                )
            subscription.stream.push(frames)
        for subscription in self.joining:
            subscription.hold(batch)

    def close_all(self, reason: str) -> None:
        for subscription in [*self.live, *self.joining]:
            subscription.stream.close(reason)
