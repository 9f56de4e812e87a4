"""A lean text/event-stream response: frames go straight to the ASGI `send`.

Why not `StreamingResponse`, `fastapi.sse` or sse-starlette: each runs extra tasks and
memory streams for every client (a body task, a disconnect listener, a ping task), which
measured 5-10x the CPU of writing frames directly. Here a client costs its own request
task and nothing more: everything that must reach it (broadcast frames, heartbeats, the
close at shutdown) is pushed into its `EventStream`, and the task wakes, writes, and
waits again. See the README's "How the stream works".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .logs import value
from .routing import resume_id
from .sse import encode_retry

if TYPE_CHECKING:
    from .hub import StreamHub

log = logging.getLogger(__name__)
#: A first chunk up to this size carries the `retry` line in the same write.
MAX_CHUNK_WITH_RETRY = 16 * 1024
#: How streams end as a matter of course; any other reason is a drop worth a WARNING.
ROUTINE_ENDS = frozenset({"done", "gone", "shutdown"})

# Proxies and browsers must pass each frame on at once, never cache or transform it.
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told otherwise, which holds events back.
    (b"x-accel-buffering", b"no"),
]


class EventStream:
    """One client's open stream: a mailbox of encoded frames, and the client's presence.

    `wait()` parks the client's request task until a frame is pushed, the stream closes,
    a deadline passes, or the client goes away; no second task watches for the disconnect.

    Under uvicorn the stream holds the connection's transport (see `_transport_of`): it
    sleeps on a plain future that a push resolves, and learns that the client left from
    the transport, on every wake-up and from the hub's timer. Under another server it
    sleeps in ASGI `receive()`, which reports the disconnect, and a push wakes it by
    cancelling that wait. The first way is the one to keep fast: a cancellation raises an
    exception in the woken task, and in a broadcast to 10,000 subscribers the garbage of
    those exceptions alone cost about as much CPU as the delivery itself.
    """

    __slots__ = (
        "_receive",
        "_sleeper",
        "_task",
        "_transport",
        "_waiter",
        "active",
        "close_reason",
        "closed",
        "max_pending",
        "pending",
        "writing_since",
    )

    def __init__(self, receive: Receive, max_pending: int) -> None:
        self._receive = receive
        self._transport = _transport_of(receive)
        # Without the transport, aborting means cancelling the client's own request task,
        # which is the one creating its stream (never the hub's timer that aborts it).
        self._task = asyncio.current_task() if self._transport is None else None
        self._waiter: asyncio.Future[None] | None = None
        self._sleeper: asyncio.Task[object] | None = None
        self.pending: deque[bytes] = deque()
        self.max_pending = max_pending
        self.closed = False
        self.close_reason = ""
        # Set on every write, cleared by the hub's heartbeat timer: an idle stream is one
        # that has not written since the timer last looked.
        self.active = True
        # Loop time at which the write in progress started, 0.0 while none is. The hub's
        # timer only ever sees it set while a write is blocked on a client that does not
        # read (a write that does not block never yields to the loop in between).
        self.writing_since = 0.0

    def push(self, frame: bytes) -> None:
        """Queue a frame; a client this far behind is dropped (it resumes from history)."""
        if self.closed:
            return
        if len(self.pending) >= self.max_pending:
            self.close("slow")
            return
        self.pending.append(frame)
        self._wake()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._wake()

    def check_gone(self) -> None:
        """Close the stream if the client's connection is closed (the hub's timer asks)."""
        if self._transport is not None and self._transport.is_closing():
            self.close("gone")

    def abort(self, reason: str) -> None:
        """Drop the connection now, even in the middle of a write that is blocked.

        ASGI has no message for it, and a blocked `send()` waits for the client for ever:
        uvicorn's `send` awaits its flow control until the client reads or the connection
        is lost. Aborting the transport makes uvicorn see the connection lost; the blocked
        `send()` returns and the response ends as for any client that went away, with no
        exception. Without the transport, the request task stuck in `send()` is
        cancelled instead: the server logs the exception and closes the connection.
        """
        self.close(reason)
        if self._transport is not None:
            self._transport.abort()
        elif self._task is not None:
            self._task.cancel()

    def take(self) -> bytes:
        """Everything queued, as one write."""
        frames = b"".join(self.pending)
        self.pending.clear()
        return frames

    async def wait(self, deadline: float | None = None) -> None:
        """Return once a frame is pending, the stream closed, or `deadline` (loop time) passed."""
        if self.pending or self.closed:
            return
        if self._transport is None:
            await self._wait_in_receive(deadline)
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, self._wake) if deadline is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        self.check_gone()

    async def _wait_in_receive(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_at(deadline, self._wake) if deadline is not None else None
        self._sleeper = asyncio.current_task()
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.close("gone")
                    return
        except asyncio.CancelledError:
            if self._sleeper is not None:  # not our own wake-up: a real cancellation
                raise
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
        finally:
            self._sleeper = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        sleeper, self._sleeper = self._sleeper, None
        if sleeper is not None:
            sleeper.cancel()


def _transport_of(receive: Receive) -> asyncio.Transport | None:
    """The client connection's transport, where the server lets us see it.

    uvicorn's `receive` (passed through unwrapped by Starlette and FastAPI) is a method of
    the connection's request cycle, which holds the transport. Behind middleware that
    wraps `receive`, or under another server, there is none, and the stream falls back
    to ASGI `receive()` alone.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if callable(getattr(transport, "is_closing", None)) and callable(
        getattr(transport, "abort", None)
    ):
        return transport  # type: ignore[no-any-return]
    return None


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
        # Read the (empty) request body first: from then on receive() only reports the
        # disconnect, which is what EventStream.wait() listens for.
        message = await receive()
        while message["type"] == "http.request" and message.get("more_body", False):
            message = await receive()
        hub = self.hub
        retry_ms = hub.retry_for(self.retry_ms)
        if hub.full:
            hub.metrics.stream_refused()
            await _refuse(send, retry_ms, hub.max_clients)
            return
        stream = hub.open(receive)
        if message["type"] == "http.disconnect":
            stream.close("gone")
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
            # Closed here, not whenever the garbage collector finds it: a source's cleanup
            # (a channel's unsubscribe) runs as soon as the stream ends.
            async with aclosing(self.source(stream)) as chunks:
                async for chunk in chunks:
                    if stream.closed and stream.close_reason == "gone":
                        break
                    if retry and len(chunk) > MAX_CHUNK_WITH_RETRY:
                        await send(_body(retry))
                        retry = b""
                    # Marked for the hub's timer, which drops a write blocked for longer
                    # than SSE_SEND_TIMEOUT (see EventStream.abort).
                    stream.writing_since = clock()
                    await send(_body(retry + chunk if retry else chunk))
                    retry = b""
                    stream.writing_since = 0.0
                    hub.count_written(chunk)
                    stream.active = True
            # The last write can block as well (a client that stopped reading, at shutdown).
            stream.writing_since = clock()
            await send({"type": "http.response.body", "body": retry, "more_body": False})
        finally:
            hub.release(stream)
            _log_close(scope, stream.close_reason, clock() - opened)
        if self.background is not None:
            await self.background()


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
