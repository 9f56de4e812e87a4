"""Several channels on one stream: one Last-Event-ID that covers every channel.

The id of each event on such a stream is a cursor: the newest id written from each
channel, in the order the request named the channels, each as `<ms>-<seq>` in base 36,
joined by `,`: two channels `lp3x6bk0-7,lp3x6bq8-0`. A browser resends the last one it
got, and the stream resumes every channel from its own position.

Each message's body is encoded once per worker; only the `id:` line, which depends on
where the subscriber stands on its other channels, is written per subscriber. The body
names the channel in the event type: `event: <channel>` for a plain message,
`event: <channel>:<event>` for a named one (channel names have no `:`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .messages import BadEventId, Key, Message

#: The most channels one stream may carry (the cursor grows with each).
MAX_CHANNELS = 16
_PART = re.compile(r"([0-9a-z]{1,13})-([0-9a-z]{1,13})\Z")
_MAX_PART = 2**64 - 1
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if not number:
            return digits


def format_part(key: Key) -> str:
    return f"{_base36(key[0])}-{_base36(key[1])}"


def parse_cursor(text: str, channels: int) -> list[Key]:
    """The position of each of `channels` channels; BadEventId if `text` is not a cursor."""
    parts = text.split(",")
    keys: list[Key] = []
    for part in parts:
        match = _PART.match(part)
        if match is None:
            break
        key = int(match[1], 36), int(match[2], 36)
        if max(key) > _MAX_PART:
            break
        keys.append(key)
    if len(keys) != channels or len(parts) != channels:
        raise BadEventId(
            f"Last-Event-ID must be an id sent by this stream: {channels} positions "
            "like lp3x6bk0-7, joined by ','"
        )
    return keys


def body(message: Message, channel: str) -> bytes:
    """The message's frame without its id line, its event type naming the channel."""
    frame = message.frame
    rest = frame[frame.index(b"\n") + 1 :]  # encode_event writes the id line first
    prefix = b"event: " + channel.encode()
    if rest.startswith(b"event: "):
        return prefix + b":" + rest[7:]
    return prefix + b"\n" + rest


class Cursor:
    """Where one multi-channel stream stands on each of its channels."""

    __slots__ = ("channels", "parts")

    def __init__(self, channels: Sequence[str], keys: Sequence[Key]) -> None:
        self.channels = list(channels)
        self.parts = [format_part(key) for key in keys]

    def advance(self, index: int, key: Key) -> None:
        self.parts[index] = format_part(key)

    def render(self, index: int, messages: Sequence[Message], bodies: Sequence[bytes]) -> bytes:
        """The frames of `messages` (channel `index`), each with the cursor after it."""
        out = []
        for message, encoded in zip(messages, bodies, strict=True):
            self.parts[index] = format_part(message.key)
            out.append(b"id: " + ",".join(self.parts).encode() + b"\n" + encoded)
        return b"".join(out)

    @property
    def id(self) -> str:
        return ",".join(self.parts)
