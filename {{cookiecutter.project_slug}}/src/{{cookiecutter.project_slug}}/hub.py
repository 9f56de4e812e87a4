"""Every open stream of this worker: one heartbeat timer for all, and a prompt shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
from types import FrameType

from starlette.types import Receive

from .metrics import Metrics, events_in
from .sse import encode_comment
from .stream import EventStream

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
        #: Events written by this worker's streams, a plain int so that counting costs
        #: nothing per write; `metrics` catches up on it (see metrics.py).
        self.events_sent = 0
        # The last chunk counted, and its count: a broadcast writes the very same bytes
        # object to every subscriber, so it is scanned once per message, not once per
        # subscriber (one scan of a 64 KiB frame measured 84 us: 0.8 s of CPU for 10,000).
        self._counted: tuple[bytes, int] = (b"", 0)
        self._ticker: asyncio.Task[None] | None = None

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
        stream = EventStream(receive, self.max_pending)
        self.streams.add(stream)
        self.metrics.stream_opened()
        return stream

    def release(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        stream.close("done")
        self.metrics.stream_closed(stream.close_reason)
        self.metrics.count_events(self.events_sent)

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._watch(), name="sse-streams-timer")

    async def stop(self) -> None:
        self.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.metrics.worker_stopped()

    def close_all(self) -> None:
        """End every stream now; clients reconnect (elsewhere) and resume by Last-Event-ID.

        A stream blocked writing to a client that does not read would hold the shutdown
        up until SSE_SEND_TIMEOUT: it is dropped at once (it resumes like the others).
        """
        ending = sum(not stream.closed for stream in self.streams)
        if ending:  # once, though both the signal and the lifespan's end call this
            log.info("event=shutdown streams=%d", ending)
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
            if beat:
                self.metrics.count_events(self.events_sent)
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

    def close_on_exit_signals(self) -> None:
        """Close every stream as soon as the server is asked to stop.

        uvicorn waits for open responses to finish before it runs the lifespan shutdown,
        so an endless stream would keep it "Waiting for connections to close" for ever,
        on SIGTERM and on every `--reload`. Chaining onto uvicorn's signal handlers ends
        the streams first, and the server then stops at once.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: FrameType | None, previous=previous) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(signum, frame)

            with contextlib.suppress(ValueError):  # only the main thread may set handlers
                signal.signal(sig, handler)
