"""The text/event-stream wire format: turning events into bytes.

Framing follows the HTML spec's rules (the same rules `fastapi.sse` and sse-starlette
apply): data is split on every line break (CRLF, LF or CR) into one `data:` line each, so
no payload can end an event early or smuggle in a field; an id or event name must be one
line; an id must not contain NUL, because browsers ignore such an id.

What a client reads back is exactly what was encoded, with one exception the format
imposes: a CRLF or CR in data arrives as LF, since every line break ends a `data:` line.
An empty event name is refused (a client would read it as "message"), and so is text
that is not valid Unicode (a lone surrogate cannot be encoded as UTF-8). The property
tests in tests/test_sse_properties.py check this against the spec's parsing algorithm.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class FrameError(ValueError):
    """A field value that cannot be sent as one well-formed event."""


def _one_line(field: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise FrameError(f"{field} must be a single line")
    return value


def encode_event(
    data: str,
    *,
    id: str | None = None,  # noqa: A002 - the SSE field is called id
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One complete event, ending with the blank line that dispatches it."""
    lines: list[str] = []
    if id is not None:
        if "\0" in id:
            raise FrameError("id must not contain NUL")
        lines.append("id: " + _one_line("id", id))
    if event is not None:
        if not event:
            raise FrameError("event must not be empty; leave it out for 'message'")
        lines.append("event: " + _one_line("event", event))
    if retry is not None:
        if retry < 0:
            raise FrameError("retry must be a whole number of milliseconds >= 0")
        lines.append(f"retry: {retry}")
    lines.extend("data: " + line for line in _LINE_BREAK.split(data))
    return _utf8("\n".join(lines) + "\n\n")


def encode_retry(retry_ms: int) -> bytes:
    """Only the reconnection delay: the client stores it and dispatches nothing."""
    if retry_ms < 0:
        raise FrameError("retry must be a whole number of milliseconds >= 0")
    return f"retry: {retry_ms}\n\n".encode()


def encode_comment(text: str = "") -> bytes:
    """A comment line: clients ignore it, proxies see traffic (a heartbeat)."""
    return _utf8(": " + _one_line("comment", text) + "\n\n")


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise FrameError(f"not valid Unicode: {exc.reason} at position {exc.start}") from None
