"""One SSE client connection: open, read events until told to stop, always close.

A bare `asyncio.Protocol`, not asyncio streams: with thousands of clients in one process
the load generator shares two cores with the server under test, and every microsecond
it spends per read delays the arrival it is timing. A protocol parses each read where
the event loop delivers it, with no StreamReader buffer and no task wake-up in between;
at 5,000 clients it measured about a quarter less CPU than the streams version.
"""

import asyncio
import time
from collections.abc import Callable

from . import http
from .sse import Event, SseParser

# Called with the arrival time of a read and one event from it; True stops the stream.
OnEvent = Callable[[float, Event], bool]
EXPECTED_ERRORS = (OSError, ValueError)  # the connection failed, or a malformed response
MAX_HEAD = 16384


class StreamResult:
    __slots__ = ("connected_at", "eof", "error", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.eof = False  # the server ended the body (chunked terminator or close)
        self.error: str | None = None
        self.connected_at: float | None = None  # TCP handshake done (CLOCK_MONOTONIC)

    def mark_connected(self) -> None:
        self.connected_at = time.monotonic()


class _SseClient(asyncio.Protocol):
    """Sends one GET, then turns every read into events for `on_event`."""

    def __init__(
        self,
        request: bytes,
        result: StreamResult,
        on_open: Callable[[], None],
        on_event: OnEvent,
        finished: asyncio.Future[None],
        ready_mark: bytes = b"",
    ) -> None:
        self.request = request
        self.result = result
        self.on_open = on_open
        self.on_event = on_event
        self.finished = finished
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.decoder: http.BodyDecoder | None = None
        self.parser = SseParser()
        #: What the body must hold before the stream counts as open (`on_open`); empty:
        #: the response head is enough.
        self.ready_mark = ready_mark
        self._seen = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.result.mark_connected()
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            if self.decoder is None:
                data = self._read_head(data)
                if self.decoder is None or self.finished.done():
                    return
            data = self.decoder.feed(data)
            if self.ready_mark:
                self._look_for_ready_mark(data)
            for event in self.parser.feed(data):
                if self.on_event(now, event):
                    self._finish()
                    return
            if self.decoder.done:
                self.result.eof = True
                self._finish()
        except EXPECTED_ERRORS as exc:
            self._finish(type(exc).__name__)

    def _read_head(self, data: bytes) -> bytes:
        """Collect the status line and headers; return the body bytes after them."""
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                raise ValueError("response head too long")
            return b""
        status, headers = http.parse_head(self.head[: end + 4])
        body, self.head = self.head[end + 4 :], b""
        self.result.status = status
        if status != 200:
            self._finish(f"http {status}")
            return b""
        self.decoder = http.decoder_for(headers)
        if not self.ready_mark:
            self.on_open()
        return body

    def _look_for_ready_mark(self, data: bytes) -> None:
        seen = self._seen + data
        if self.ready_mark in seen:
            self.ready_mark = b""
            self.on_open()
        else:  # only what a mark split between two reads needs
            self._seen = seen[-len(self.ready_mark) :]

    def eof_received(self) -> bool:
        self.result.eof = self.decoder is not None
        self._finish(None if self.decoder is not None else "closed before the headers")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(type(exc).__name__ if exc is not None else None)

    def _finish(self, error: str | None = None) -> None:
        if self.finished.done():
            return
        if error is not None and self.result.error is None:
            self.result.error = error
        self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def stream_events(
    port: int,
    path: str,
    result: StreamResult,
    on_open: Callable[[], None],
    on_event: OnEvent,
    ready_mark: bytes = b"",
) -> None:
    """Fill `result` in place, so a caller that cancels us still sees how far we got."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    # Origin as a page on another origin sends it: servers with CORS then do their work.
    request = http.build_request(
        "GET",
        path,
        port,
        Accept="text/event-stream",
        Cache_Control="no-cache",
        Origin=http.ORIGIN,
    )
    transport = None
    try:
        transport, _ = await loop.create_connection(
            lambda: _SseClient(request, result, on_open, on_event, finished, ready_mark),
            http.HOST,
            port,
        )
        await finished
    except EXPECTED_ERRORS as exc:
        result.error = type(exc).__name__
    finally:
        if transport is not None:
            transport.close()
