"""One client's open stream: a mailbox of encoded frames, and how it waits for them.

`wait()` parks the client's request task until a frame is pushed, the stream closes, a
deadline passes, or the client goes away; no second task watches for the disconnect.
How it parks is the delivery mode, chosen per stream by `open_stream()`:

- "transport" (uvicorn): the stream holds the connection's transport. It sleeps on a
  plain future that a push resolves, and learns that the client left from the
  transport, on every wake-up and from the hub's timer.
- "future" (granian): the server's `receive()` is a plain method that returns a
  future. The stream sleeps on its own future as above, and a callback on the pending
  `receive()` future hears the disconnect: no task, no exception.
- "receive" (any other ASGI server, or middleware that wraps `receive`): it sleeps in
  ASGI `receive()`, which reports the disconnect, and a push wakes it by cancelling
  that wait. A cancellation raises an exception in the woken task: in a broadcast to
  10,000 subscribers the garbage of those exceptions alone cost about as much CPU as
  the delivery itself, so this is the mode to avoid where the server allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections import deque
from typing import Literal

from starlette.types import Message, Receive

DeliveryMode = Literal["transport", "future", "receive"]


class EventStream:
    """The mailbox of one client's stream; `wait()` and `abort()` are the delivery mode's."""

    __slots__ = (
        "_task",
        "active",
        "close_reason",
        "closed",
        "farewell",
        "interrupted",
        "max_pending",
        "pending",
        "pulling",
        "writing_since",
    )

    mode: DeliveryMode

    def __init__(self, max_pending: int) -> None:
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
        #: The last frame to write after a close, e.g. why the stream ended (see close()).
        self.farewell = b""
        # The client's request task, which creates its stream, and whether it is waiting
        # for the source's next chunk: a close then interrupts the source (see close()).
        self._task = asyncio.current_task()
        self.pulling = False
        self.interrupted = False

    def push(self, frame: bytes) -> None:
        """Queue a frame; a client this far behind is dropped (it resumes from history)."""
        if self.closed:
            return
        if len(self.pending) >= self.max_pending:
            self.close("slow")
            return
        self.pending.append(frame)
        self._wake()

    def close(self, reason: str, farewell: bytes = b"") -> None:
        """End the stream: the response writes `farewell` (if any) and stops.

        A source parked in `wait()` returns from it. A source awaiting anything else (a
        queue, a sleep, a database) is interrupted: its task is cancelled, and the response
        ends it, so that a source written the obvious way cannot hold a closed stream open
        (at shutdown, for a stalled client, when a token expires).
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.farewell = farewell
        if self._wake():
            return
        task = self._task
        if self.pulling and task is not None and task is not asyncio.current_task():
            self.interrupted = True
            task.cancel()

    def take(self) -> bytes:
        """Everything queued, as one write."""
        frames = b"".join(self.pending)
        self.pending.clear()
        return frames

    def check_gone(self) -> None:
        """Close the stream if the client's connection is closed (the hub's timer asks)."""

    def abort(self, reason: str) -> None:
        """Drop the connection now, even in the middle of a write that is blocked.

        ASGI has no message for it, and a blocked `send()` waits for the client for ever
        (uvicorn's `send` awaits its flow control until the client reads or the
        connection is lost).
        """
        raise NotImplementedError

    async def wait(self, deadline: float | None = None) -> None:
        """Return once a frame is pending, the stream closed, or `deadline` (loop time) passed."""
        raise NotImplementedError

    def _wake(self) -> bool:
        """Wake a `wait()` in progress; whether there was one."""
        raise NotImplementedError


class _FutureWaiting(EventStream):
    """Sleeps on a plain future that a push, a close or the deadline resolves."""

    __slots__ = ("_waiter",)

    def __init__(self, max_pending: int) -> None:
        super().__init__(max_pending)
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, deadline: float | None = None) -> None:
        if self.pending or self.closed:
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

    def _wake(self) -> bool:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(None)
        return True


class TransportStream(_FutureWaiting):
    """The fast path: the transport tells whether the client is there, and can drop it."""

    __slots__ = ("_transport",)
    mode: DeliveryMode = "transport"

    def __init__(self, transport: asyncio.Transport, max_pending: int) -> None:
        super().__init__(max_pending)
        self._transport = transport

    def check_gone(self) -> None:
        if self._transport.is_closing():
            self.close("gone")

    def abort(self, reason: str) -> None:
        # uvicorn then sees the connection lost: the blocked `send()` returns and the
        # response ends as for any client that went away, with no exception.
        self.close(reason)
        self._transport.abort()


class ListeningStream(_FutureWaiting):
    """granian's way: a callback on the pending `receive()` future hears the disconnect."""

    __slots__ = ("_receive", "_task")
    mode: DeliveryMode = "future"

    def __init__(self, receive: Receive, received: asyncio.Future[Message], max_pending: int):
        super().__init__(max_pending)
        self._receive = receive
        # As for ReceiveStream: aborting cancels the client's own request task.
        self._task = asyncio.current_task()
        received.add_done_callback(self._received)

    def _received(self, received: asyncio.Future[Message]) -> None:
        # A failed receive() means the connection is gone as surely as a disconnect.
        failed = received.cancelled() or received.exception() is not None
        if failed or received.result()["type"] == "http.disconnect":
            self.close("gone")
        elif not self.closed:  # a piece of the request body: listen on
            asyncio.ensure_future(self._receive()).add_done_callback(self._received)

    def abort(self, reason: str) -> None:
        self.close(reason)
        if self._task is not None:
            self._task.cancel()


class ReceiveStream(EventStream):
    """The fallback: sleeps in ASGI `receive()`, woken by cancelling that wait."""

    __slots__ = ("_receive", "_sleeper")
    mode: DeliveryMode = "receive"

    def __init__(self, receive: Receive, max_pending: int) -> None:
        super().__init__(max_pending)
        self._receive = receive
        self._sleeper: asyncio.Task[object] | None = None

    def abort(self, reason: str) -> None:
        # The request task stuck in `send()` is cancelled (its own, never the hub's timer
        # that aborts it): the server logs the exception and closes the connection.
        self.close(reason)
        if self._task is not None and not self.interrupted:
            self._task.cancel()

    async def wait(self, deadline: float | None = None) -> None:
        if self.pending or self.closed:
            return
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

    def _wake(self) -> bool:
        sleeper, self._sleeper = self._sleeper, None
        if sleeper is None:
            return False
        sleeper.cancel()
        return True


def open_stream(receive: Receive, max_pending: int, *, client_timeout: float) -> EventStream:
    """A stream in the fastest delivery mode this connection allows."""
    transport = transport_of(receive)
    if transport is not None:
        drop_half_open_connections(transport, client_timeout)
        return TransportStream(transport, max_pending)
    if not inspect.iscoroutinefunction(receive):
        # A native method (granian's) that returns a future: ensure_future() gives that
        # future itself. (Anything else it is handed becomes a task: correct, not fast.)
        return ListeningStream(receive, asyncio.ensure_future(receive()), max_pending)
    return ReceiveStream(receive, max_pending)


def transport_of(receive: Receive) -> asyncio.Transport | None:
    """The client connection's transport, where the server lets us see it.

    uvicorn's `receive` (passed through unwrapped by Starlette and FastAPI) is a method of
    the connection's request cycle, which holds the transport. Behind middleware that
    wraps `receive`, or under another server, there is none. tests/test_servers.py fails
    if uvicorn's streams ever stop getting it.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if callable(getattr(transport, "is_closing", None)) and callable(
        getattr(transport, "abort", None)
    ):
        return transport  # type: ignore[no-any-return]
    return None


def drop_half_open_connections(transport: asyncio.Transport, timeout: float) -> None:
    """Have the kernel give up on a client that vanished (no FIN, no RST) after `timeout` s.

    Without this, a connection whose peer is gone (a laptop closed, a mobile network
    lost) stays open until TCP's retransmissions give up, about 15 minutes, holding its
    stream all that time. TCP_USER_TIMEOUT bounds how long sent data may go
    unacknowledged, and a stream is never idle: a heartbeat goes out at least every
    SSE_HEARTBEAT_INTERVAL, so the bound is that interval plus `timeout`. (TCP keepalive
    would add nothing to it but three more system calls on every connect.) Linux only:
    elsewhere the option is skipped.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):  # a socket the platform does not let us tune
        sock.setsockopt(socket.IPPROTO_TCP, option, int(timeout * 1000))
