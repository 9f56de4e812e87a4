"""A lean text/event-stream response: frames go straight to the ASGI `send`.

Why not `StreamingResponse`, `fastapi.sse` or sse-starlette: each runs extra tasks and
memory streams for every client (a body task, a disconnect listener, a ping task), which
measured 5-10x the CPU of writing frames directly. Here a client costs its own request
task and nothing more: everything that must reach it (broadcast frames, heartbeats, the
close at shutdown) is pushed into its `EventStream` (delivery.py), and the task wakes,
writes, and waits again. See the README's "How the stream works".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .delivery import EventStream
from .hub import StreamHub
from .logs import value
from .routing import resume_id
from .sse import encode_retry

log = logging.getLogger(__name__)
#: A first chunk up to this size carries the `retry` line in the same write.
MAX_CHUNK_WITH_RETRY = 16 * 1024
#: How streams end as a matter of course; any other reason is a drop worth a WARNING.
ROUTINE_ENDS = frozenset({"done", "gone", "shutdown", "expired"})

# Proxies and browsers must pass each frame on at once, never cache or transform it.
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told otherwise, which holds events back.
    (b"x-accel-buffering", b"no"),
]


#: Produces the body of one stream: yields bytes to write, parks in `stream.wait()`.
#: Its first chunk should come at once (the `retry` line is written with it).
Source = Callable[[EventStream], AsyncIterator[bytes]]


class EventStreamResponse(Response):
    """Writes `retry` and every chunk `source` yields, until it ends or the client goes."""

    media_type = "text/event-stream"

    # `status_code` is never passed: FastAPI reads its default to document the response
    # (and fails to build the OpenAPI schema when the parameter is missing).
    def __init__(
        self, hub: StreamHub, source: Source, *, retry_ms: int, status_code: int = 200
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.raw_headers = list(STREAM_HEADERS)
        self.hub = hub
        self.source = source
        self.retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request body is not waited for: a GET has no use for one, and a client that
        # never finishes sending it would hold the stream (and the server's shutdown) up.
        # Waiting in receive() (delivery.py) skips body messages and hears the disconnect.
        hub = self.hub
        retry_ms = hub.retry_for(self.retry_ms)
        if hub.full:
            hub.metrics.stream_refused()
            await _refuse(send, retry_ms, hub.max_clients)
            return
        stream = hub.open(receive)
        clock = asyncio.get_running_loop().time
        opened = clock()
        try:
            if log.isEnabledFor(logging.DEBUG):
                _log_open(scope)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            # Written with the first chunk when that is small (a reconnect storm's first
            # events): a write is a system call and a packet, and every client's first event
            # waits behind them. A large catch-up is not copied for it.
            retry = encode_retry(retry_ms)
            # A stream closed before it starts (the server is stopping, the client left)
            # writes only its `retry`. Closed here, not whenever the garbage collector finds
            # it: a source's cleanup (a channel's unsubscribe) runs as soon as the stream ends.
            async with aclosing(self.source(stream)) as chunks:
                while not stream.closed:
                    chunk = await _next_chunk(stream, chunks)
                    # Nothing more once the stream is closed, whatever the source had:
                    # a closed stream may be one whose reader lost the right to it.
                    if chunk is None or stream.closed:
                        break
                    if retry and len(chunk) > MAX_CHUNK_WITH_RETRY:
                        await send(_body(retry))
                        retry = b""
                    # Marked for the hub's timer, which drops a write blocked for
                    # longer than SSE_SEND_TIMEOUT (see EventStream.abort).
                    stream.writing_since = clock()
                    await send(_body(retry + chunk if retry else chunk))
                    retry = b""
                    stream.writing_since = 0.0
                    hub.count_written(chunk)
                    stream.active = True
            # The last write can block as well (a client that stopped reading, at shutdown).
            stream.writing_since = clock()
            last = retry + stream.farewell if stream.close_reason != "gone" else retry
            await send({"type": "http.response.body", "body": last, "more_body": False})
        finally:
            hub.release(stream)
            _log_close(scope, stream.close_reason, clock() - opened)
        if self.background is not None:
            await self.background()


async def _next_chunk(stream: EventStream, chunks: AsyncIterator[bytes]) -> bytes | None:
    """The source's next chunk; None once it ends, or once a close interrupted it."""
    stream.pulling = True
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None
    except asyncio.CancelledError:
        if not stream.interrupted:  # the server cancelled the request: not ours to keep
            raise
        uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return None
    finally:
        stream.pulling = False


async def _refuse(send: Send, retry_ms: int, max_clients: int) -> None:
    """503 with Retry-After: this worker already holds SSE_MAX_CLIENTS streams."""
    body = (
        b'{"detail":"This worker has reached its limit of %d open streams; retry later."}'
        % max_clients
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % max(1, -(-retry_ms // 1000))),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _log_open(scope: Scope) -> None:
    resume = resume_id(scope)
    if resume is None:
        log.debug("event=connect client=%s path=%s", _client(scope), value(scope["path"]))
    else:
        log.debug(
            "event=resume client=%s path=%s last_event_id=%s",
            _client(scope),
            value(scope["path"]),
            value(resume[:64]),
        )


def _log_close(scope: Scope, reason: str, seconds: float) -> None:
    level = logging.DEBUG if reason in ROUTINE_ENDS else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "event=%s reason=%s client=%s path=%s seconds=%.3f",
            "close" if level == logging.DEBUG else "drop",
            value(reason),
            _client(scope),
            value(scope["path"]),
            seconds,
        )


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _body(chunk: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}
