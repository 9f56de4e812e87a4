"""An incremental text/event-stream parser that works on bytes (cheap per event)."""

from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    event: bytes  # b"message" unless an `event:` line says otherwise
    id: bytes | None
    data: bytes


class SseParser:
    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Event]:
        # The spec allows CR, LF or CRLF line ends; sse-starlette sends CRLF. Normalise,
        # keeping a trailing CR back in case its LF arrives in the next read.
        buf = self._buf + data
        if buf.endswith(b"\r"):
            buf, self._buf = buf[:-1], b"\r"
        else:
            self._buf = b""
        buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buf.split(b"\n\n")
        self._buf = rest + self._buf
        return [event for block in blocks if (event := parse_block(block)) is not None]


def parse_block(block: bytes) -> Event | None:
    kind, event_id, data = b"message", None, []
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            kind = value
        elif name == b"id":
            event_id = value
    # Blocks with only comments or `retry:` dispatch nothing (as in a browser); a named
    # event without data (a bare `event: end`) still counts, as the end of the stream.
    if not data and kind == b"message":
        return None
    return Event(kind, event_id, b"\n".join(data))
