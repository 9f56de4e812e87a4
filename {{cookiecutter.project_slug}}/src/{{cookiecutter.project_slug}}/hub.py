"""Every open stream of this worker: one heartbeat timer for all, and a prompt shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import FrameType

from starlette.types import Receive

from .sse import encode_comment
from .stream import EventStream

HEARTBEAT = encode_comment("ping")


class StreamHub:
    def __init__(self, *, heartbeat_interval: float, max_pending: int = 64) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.max_pending = max_pending
        self.streams: set[EventStream] = set()
        self._ticker: asyncio.Task[None] | None = None

    def open(self, receive: Receive) -> EventStream:
        stream = EventStream(receive, self.max_pending)
        self.streams.add(stream)
        return stream

    def release(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        stream.close("done")

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._heartbeats(), name="sse-heartbeats")

    async def stop(self) -> None:
        self.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def close_all(self) -> None:
        """End every stream now; clients reconnect (elsewhere) and resume by Last-Event-ID."""
        for stream in list(self.streams):
            stream.close("shutdown")

    async def _heartbeats(self) -> None:
        # Ticking at half the interval and pinging streams that wrote nothing since the
        # last tick means no stream is ever silent for longer than the interval.
        period = self.heartbeat_interval / 2
        while True:
            await asyncio.sleep(period)
            for stream in self.streams:
                if stream.active:
                    stream.active = False
                else:
                    stream.push(HEARTBEAT)

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
