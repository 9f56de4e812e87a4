"""Prometheus metrics behind GET /metrics, kept off the per-event path.

A stream pays nothing for metrics: the hub keeps plain integers (events written, streams
ended by reason, and its set of open streams), and `catch_up` moves them into Prometheus
on the hub's tick (at most a second apart) and before every scrape. Prometheus' own
counters take a lock each time; four of them per stream measured a few percent of a
reconnect storm's CPU (benchmarks/, S1).

Several worker processes: set PROMETHEUS_MULTIPROC_DIR to an empty directory that all
workers of one instance share, before they start. Each worker then writes its values to
files there and any worker's /metrics adds them all up (prometheus-client's
multiprocess mode). See the README's "Production" section for the limits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The `_created` timestamp series double what a scrape carries and no dashboard uses them.
disable_created_metrics()
#: Why streams end: `done` is a normal end; the others drop a client, who reconnects.
CLOSE_REASONS = ("done", "gone", "slow", "stalled", "shutdown", "expired")
# Publishing is a broker write: a memory append takes microseconds, a Redis XADD about a
# millisecond on a local network; the top buckets catch a struggling Redis.
PUBLISH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)  # fmt: skip


def events_in(chunk: bytes) -> int:
    """How many events a run of frames from `sse.py` holds, at C speed (two scans).

    Every frame ends with the only blank line in it (each line of it starts with a field
    name), and a comment frame, the heartbeat, is the only one that starts with ":".
    """
    comments = chunk.count(b"\n\n:") + chunk.startswith(b":")
    return chunk.count(b"\n\n") - comments


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR) or None


class Metrics:
    """The service's metrics, in a registry of its own (one per app, so tests can count)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.open_streams = Gauge(
            "sse_open_streams",
            "Event streams open now.",
            registry=self.registry,
            # Summed over the live workers; a stopped worker's streams are not counted.
            multiprocess_mode="livesum",
        )
        self.events_sent = Counter(
            "sse_events_sent",
            "Events written to clients (heartbeat comments and the retry line not counted).",
            registry=self.registry,
        )
        self.streams_closed = Counter(
            "sse_streams_closed",
            "Event streams ended, by reason: done (sent everything), gone (the client "
            "left), slow (fell too far behind), stalled (stopped reading), shutdown (the "
            "worker stopped), expired (its token did).",
            ["reason"],
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "sse_streams_refused",
            "Streams refused with 503 because the worker held SSE_MAX_CLIENTS already.",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "sse_publish_seconds",
            "Time to store a published message in the broker; its _count is the number "
            "of messages published.",
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self._closed = {reason: self.streams_closed.labels(reason) for reason in CLOSE_REASONS}
        self._events_counted = 0
        self._ended_counted: dict[str, int] = {}
        self._multiproc_dir = multiprocess_dir()
        if self._multiproc_dir is not None:
            forget_dead_workers(Path(self._multiproc_dir))

    def catch_up(self, *, open_streams: int, events: int, ended: Mapping[str, int]) -> None:
        """Bring the metrics up to this worker's running totals: events written, streams
        ended by reason; and the gauge to the streams open now."""
        self.open_streams.set(open_streams)
        new = events - self._events_counted
        if new > 0:
            self._events_counted = events
            self.events_sent.inc(new)
        for reason, total in ended.items():
            new = total - self._ended_counted.get(reason, 0)
            if new > 0:
                self._ended_counted[reason] = total
                self._closed_child(reason).inc(new)

    def _closed_child(self, reason: str) -> Any:
        child = self._closed.get(reason)
        if child is None:
            child = self._closed[reason] = self.streams_closed.labels(reason)
        return child

    def stream_refused(self) -> None:
        self.streams_refused.inc()

    def published(self, seconds: float) -> None:
        self.publish_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The text format for a scrape: this worker's metrics, or all workers' together."""
        if self._multiproc_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiproc_dir)
        return generate_latest(registry)

    def worker_stopped(self) -> None:
        """A stopping worker takes its live gauges out of the multiprocess sum."""
        if self._multiproc_dir is not None:
            mark_process_dead(os.getpid(), self._multiproc_dir)


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that died without stopping (killed, crashed).

    uvicorn's supervisor restarts a dead worker but, unlike gunicorn's `child_exit` hook,
    tells nobody, so without this the open streams of a killed worker would stay in the
    sum until the directory is emptied.
    """
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
