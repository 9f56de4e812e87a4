"""The demo counter: each client gets Message 1..count, its own counter.

Standalone, behind GET /events: every event carries its number as `id`, so a browser
that reconnects sends it back in `Last-Event-ID` and the stream resumes with the next
message: nothing lost, nothing repeated. After the last message an `end` event tells the
client to close its EventSource, and a client that reconnects anyway gets 204, which
stops EventSource for good (the tutorial version restarts from message 1 forever instead).

On the page's stream (GET /channels/events?...&demo=true) the same counter rides with the
channels as `Counter`: events typed `demo`, then one `demo:end`, and the count in the
last part of the stream's cursor, so a resume goes on from the next message there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import lru_cache

from .broker.cursor import Cursor
from .sse import encode_event
from .stream import EventStream

END = encode_event("", event="end")
MAX_ID_DIGITS = 20

#: One event of the stream, for the OpenAPI schema: OpenAPI before 3.2 describes an event
#: stream by the schema of each event (schemathesis checks every event against it).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"enum": ["message", "end"]},
        "data": {"type": "string", "pattern": "^(Message [0-9]+)?$"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "required": ["data"],
}


class BadLastEventId(ValueError):
    pass


def parse_last_event_id(header: str | None) -> int:
    """The last message the client has (0 for a new client)."""
    if header is None:
        return 0
    value = header.strip()
    if not value.isdigit() or not value.isascii() or len(value) > MAX_ID_DIGITS:
        raise BadLastEventId(
            f"Last-Event-ID must be a whole number >= 0 with at most {MAX_ID_DIGITS} digits"
        )
    return int(value)


async def count_messages(
    stream: EventStream, *, after: int, count: int, interval: float
) -> AsyncIterator[bytes]:
    """Message after+1..count, the first at once, then one per interval, then `end`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for number in range(after + 1, count + 1):
        # Absolute deadlines: a late write does not push every later message back.
        deadline = start + (number - after - 1) * interval
        # The first message goes out at once; before every later one the stream waits,
        # even when already late, because waiting is how it notices a client that left.
        while number > after + 1:
            await stream.wait(deadline)
            if stream.closed:
                return
            if stream.pending:
                yield stream.take()  # heartbeats between two slow messages
            if loop.time() >= deadline:
                break
        yield message_frame(number)
    yield END


# Clients connecting together (a reconnect storm) all need Message 1, 2, ...: each frame
# is encoded once and the same bytes are written to all of them.
@lru_cache(maxsize=4096)
def message_frame(number: int) -> bytes:
    return encode_event(f"Message {number}", id=str(number))


#: The event type of the counter's messages on a stream of channels, and of its end
#: (`demo:end`): a channel's events are typed like it, so no channel may be named so.
DEMO = "demo"
DEMO_END = encode_event("", event=f"{DEMO}:end")


class Counter:
    """The demo counter on a stream of channels: Message after+1..count, then `demo:end`.

    The stream waits until `deadline`, then writes what `take_due` returns. The position
    is the last part of the stream's cursor, `0-<number in base 36>`: a resume passes it
    back as `after`, and a resume after the last message gets only `demo:end`.
    """

    __slots__ = ("after", "count", "done", "interval", "number", "start")

    def __init__(self, *, after: int, count: int, interval: float) -> None:
        self.after = min(after, count)
        self.number = self.after  # the last message written
        self.count = count
        self.interval = interval
        self.start: float | None = None
        self.done = False

    def deadline(self, now: float) -> float | None:
        """When the next event is due (loop time); None once `demo:end` is written."""
        if self.done:
            return None
        if self.start is None:  # the first message is due at once
            self.start = now
        # Absolute deadlines, as in count_messages: a late write does not push the rest back.
        return self.start + (self.number - self.after) * self.interval

    def take_due(self, now: float, cursor: Cursor, index: int) -> bytes:
        """The next message if it is due (with `demo:end` after the last), else b"".

        Its id is the whole cursor, with the counter at part `index`.
        """
        deadline = self.deadline(now)
        if deadline is None or now < deadline:
            return b""
        frame = b""
        if self.number < self.count:
            self.number += 1
            cursor.advance(index, (0, self.number))
            frame = b"id: " + cursor.id.encode() + b"\n" + demo_body(self.number)
            if self.number < self.count:
                return frame
        self.done = True
        return frame + DEMO_END


@lru_cache(maxsize=4096)
def demo_body(number: int) -> bytes:
    return encode_event(f"Message {number}", event=DEMO)
