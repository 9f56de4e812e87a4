"""Every open stream of this worker: one heartbeat timer for all, and a prompt shutdown.

Stopping is a state, not a moment: from the first sign that the server stops (see
stopping.py) every open stream ends, and every stream that opens after it gets its
`retry` and ends at once, so the server never waits for a stream that opened late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random

from starlette.types import Receive

from .delivery import DeliveryMode, EventStream, open_stream
from .logs import value
from .metrics import Metrics, events_in
from .sse import encode_comment
from .stopping import on_stop

HEARTBEAT = encode_comment("ping")

log = logging.getLogger(__name__)


class StreamHub:
    def __init__(
        self,
        *,
        heartbeat_interval: float,
        max_pending: int = 64,
        send_timeout: float = 30.0,
        max_clients: int = 10_000,
        retry_jitter: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.max_pending = max_pending
        self.send_timeout = send_timeout
        self.max_clients = max_clients
        self.retry_jitter = retry_jitter
        self.streams: set[EventStream] = set()
        self.metrics = metrics or Metrics()
        #: Events written by this worker's streams, and streams ended by reason: plain
        #: ints, so that counting costs nothing per write or stream; `metrics` catches up
        #: on them (see metrics.py).
        self.events_sent = 0
        self.ended: dict[str, int] = {}
        # The last chunk counted, and its count: a broadcast writes the very same bytes
        # object to every subscriber, so it is scanned once per message, not once per
        # subscriber (one scan of a 64 KiB frame measured 84 us: 0.8 s of CPU for 10,000).
        self._counted: tuple[bytes, int] = (b"", 0)
        self._ticker: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: Set from the first sign that the server stops; never cleared.
        self.stopping = False
        self._modes_seen: set[DeliveryMode] = set()

    @property
    def full(self) -> bool:
        return len(self.streams) >= self.max_clients

    def retry_for(self, retry_ms: int) -> int:
        """This client's reconnection delay: retry_ms to retry_ms x (1 + jitter).

        After a restart every client reconnects `retry` ms after losing its stream; the
        same value for all would bring them back in one burst, a spread one evens it out.
        """
        if not self.retry_jitter:
            return retry_ms
        return random.randint(retry_ms, int(retry_ms * (1 + self.retry_jitter)))

    def count_written(self, chunk: bytes) -> None:
        """Count the events in a chunk just written to a client."""
        counted, events = self._counted
        if chunk is not counted:
            events = events_in(chunk)
            self._counted = (chunk, events)
        self.events_sent += events

    def open(self, receive: Receive) -> EventStream:
        """Register a new stream; one that opens while the server stops is closed already."""
        stream = open_stream(receive, self.max_pending, client_timeout=self.send_timeout)
        if stream.mode not in self._modes_seen:
            self._modes_seen.add(stream.mode)
            log_delivery_mode(stream.mode)
        if self.stopping:
            stream.close("shutdown")
        self.streams.add(stream)
        return stream

    def release(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        stream.close("done")
        reason = stream.close_reason
        self.ended[reason] = self.ended.get(reason, 0) + 1

    def catch_up_metrics(self) -> None:
        self.metrics.catch_up(
            open_streams=len(self.streams), events=self.events_sent, ended=self.ended
        )

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._watch(), name="sse-streams-timer")
        self._watcher = on_stop(self.close_all, lambda: len(self.streams))

    async def stop(self) -> None:
        self.close_all()
        for task in (self._ticker, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.catch_up_metrics()
        self.metrics.worker_stopped()

    def close_all(self) -> None:
        """Stop: end every stream now, and every stream that opens from now on.

        Clients reconnect (elsewhere) and resume by Last-Event-ID. A stream blocked
        writing to a client that does not read would hold the shutdown up until
        SSE_SEND_TIMEOUT: it is dropped at once (it resumes like the others).
        """
        if not self.stopping:  # once, though the signal, the watcher and the lifespan call it
            self.stopping = True
            log.info("event=shutdown streams=%d", sum(not s.closed for s in self.streams))
        for stream in list(self.streams):
            if stream.writing_since:
                stream.abort("shutdown")
            else:
                stream.close("shutdown")

    async def _watch(self) -> None:
        """The one timer of all streams: heartbeats, clients that left, stalled writes.

        Every tick (at most a second) it closes the streams whose client has gone (see
        EventStream.check_gone) and drops writes blocked for longer than the send
        timeout, so it acts within 1.5 x that timeout. About every half heartbeat
        interval it pings the streams that wrote nothing since it last looked, so no
        stream is ever silent for longer than the interval.
        """
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.heartbeat_interval / 2, self.send_timeout / 2)
        # Rounded down: the beats come at most half a heartbeat interval apart.
        ticks_per_beat = max(1, math.floor(self.heartbeat_interval / 2 / tick))
        ticks = 0
        while True:
            await asyncio.sleep(tick)
            ticks += 1
            beat = ticks % ticks_per_beat == 0
            self.catch_up_metrics()
            blocked_before = loop.time() - self.send_timeout
            stalled: list[EventStream] = []
            for stream in self.streams:
                if stream.writing_since:
                    if stream.writing_since < blocked_before:
                        stalled.append(stream)
                    continue
                stream.check_gone()
                if not beat or stream.closed:
                    continue
                if stream.active:
                    stream.active = False
                else:
                    stream.push(HEARTBEAT)
            for stream in stalled:
                stream.abort("stalled")


def log_delivery_mode(mode: DeliveryMode) -> None:
    """Say, once per mode, how this worker's streams wait: the fast path or the fallback."""
    if mode != "receive":
        log.info("event=delivery mode=%s", mode)
    else:
        log.info(
            "event=delivery mode=receive note=%s",
            value(
                "the server or a middleware hides the connection: every wake-up is a "
                "cancellation, more CPU per event than mode=transport or mode=future"
            ),
        )
