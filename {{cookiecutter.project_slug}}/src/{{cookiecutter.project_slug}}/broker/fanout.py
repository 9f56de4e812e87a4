"""The subscribers of one channel in this worker, and delivery to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..stream import EventStream

if TYPE_CHECKING:
    from .base import Message


class Subscribers:
    """Streams that are live, and streams still catching up on history.

    Delivery never waits and never encodes per subscriber: the frames are encoded once
    (when the message was made) and the same bytes are pushed to every live stream; a
    stream too far behind closes itself (see EventStream.push).
    """

    __slots__ = ("joining", "live")

    def __init__(self) -> None:
        self.live: set[EventStream] = set()
        #: Streams reading history, with the batches delivered meanwhile (bounded like
        #: a stream's own queue), to be sent once the history is written.
        self.joining: dict[EventStream, list[Sequence[Message]]] = {}

    def __len__(self) -> int:
        return len(self.live) + len(self.joining)

    def add(self, stream: EventStream) -> None:
        self.joining[stream] = []

    def go_live(self, stream: EventStream) -> list[Message] | None:
        """Make a joining stream live; the messages held for it, or None if it was not joining."""
        held = self.joining.pop(stream, None)
        if held is None:
            return None
        self.live.add(stream)
        return [message for batch in held for message in batch]

    def discard(self, stream: EventStream) -> None:
        self.live.discard(stream)
        self.joining.pop(stream, None)

    def deliver(self, batch: Sequence[Message]) -> None:
        """Push a batch of messages, in order, to every stream: one write each."""
        if not batch:
            return
        frame = batch[0].frame if len(batch) == 1 else b"".join(m.frame for m in batch)
        for stream in self.live:
            stream.push(frame)
        for stream, held in self.joining.items():
            if len(held) >= stream.max_pending:
                stream.close("slow")
            else:
                held.append(batch)

    def close_all(self, reason: str) -> None:
        for stream in [*self.live, *self.joining]:
            stream.close(reason)
