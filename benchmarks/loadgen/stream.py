"""One SSE client connection: open, read events until told to stop, always close."""

import asyncio
import time
from collections.abc import Callable

from . import http
from .sse import Event, SseParser

# Called with the arrival time of a read and one event from it; True stops the stream.
OnEvent = Callable[[float, Event], bool]
EXPECTED_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class StreamResult:
    __slots__ = ("connected_at", "eof", "error", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.eof = False  # the server ended the body (chunked terminator or close)
        self.error: str | None = None
        self.connected_at: float | None = None  # TCP handshake done (CLOCK_MONOTONIC)

    def mark_connected(self) -> None:
        self.connected_at = time.monotonic()


async def stream_events(
    port: int, path: str, result: StreamResult, on_open: Callable[[], None], on_event: OnEvent
) -> None:
    """Fill `result` in place, so a caller that cancels us still sees how far we got."""
    response = None
    try:
        response = await http.request(
            port,
            "GET",
            path,
            on_connected=result.mark_connected,
            Accept="text/event-stream",
            Cache_Control="no-cache",
        )
        result.status = response.status
        if response.status != 200:
            result.error = f"http {response.status}"
            return
        on_open()
        parser = SseParser()
        while True:
            data = await response.reader.read(http.READ_SIZE)
            now = time.monotonic()
            if not data:
                result.eof = True
                return
            for event in parser.feed(response.decoder.feed(data)):
                if on_event(now, event):
                    return
            if response.decoder.done:
                result.eof = True
                return
    except EXPECTED_ERRORS as exc:
        result.error = type(exc).__name__
    finally:
        if response is not None:
            response.writer.close()
