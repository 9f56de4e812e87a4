"""Messages and their ids, as both brokers issue them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..sse import encode_event

# Ids look like Redis stream ids, "<milliseconds>-<sequence>", for both brokers: ordered,
# and the memory broker's first part names the process run that issued them.
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})\Z")
_MAX_PART = 2**64 - 1
DEFAULT_EVENT = "message"

#: An id as a pair of numbers: ids compare in the order they were issued.
Key = tuple[int, int]


class BadEventId(ValueError):
    pass


def parse_id(text: str) -> Key:
    """An id as a sortable pair; BadEventId if it is not one this service issues."""
    match = _ID.match(text)
    # Both parts are unsigned 64-bit numbers in Redis, which refuses larger ones.
    if match is None or max(int(match[1]), int(match[2])) > _MAX_PART:
        raise BadEventId("Last-Event-ID must be an id sent by this stream, like 1700000000000-5")
    return int(match[1]), int(match[2])


def format_id(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    #: The id parsed once, for the comparisons every delivery makes.
    key: Key
    #: The complete SSE frame, encoded once and shared by every subscriber and replay;
    #: nothing else of the message is kept (its text would double what history holds).
    frame: bytes


def make_message(id: str, event: str, data: str) -> Message:  # noqa: A002 - the SSE field
    # `event: message` is what a frame without an event line means; leave it out.
    name = None if event == DEFAULT_EVENT else event
    return Message(id, parse_id(id), encode_event(data, id=id, event=name))


@dataclass(frozen=True, slots=True)
class Page:
    """One slice of a channel's history after an id, in order."""

    messages: Sequence[Message]
    #: True when nothing newer was in the history when the slice was read.
    last: bool
    #: Why the id cannot be resumed from (too old, unknown), else None; with a reset
    #: `head` is the channel's newest id, where the client resumes instead.
    reset: str | None = None
    head: str = "0-0"


def reset_frame(reason: str, head: str) -> bytes:
    # The reset carries the head id, so the client's next reconnect resumes from there
    # instead of being told the same thing again.
    return encode_event(reason, id=head, event="reset")
