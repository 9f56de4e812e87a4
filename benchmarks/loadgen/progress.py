"""Counters every client updates, and a once-a-second progress line on stderr."""

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

POLL = 0.05


@dataclass
class Progress:
    connected: int = 0
    ready: int = 0  # S1/S2: got the first event; S3: subscribed
    done: int = 0
    events: int = 0
    failed: int = 0

    def line(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


async def report(label: str, progress: Progress, every: float = 1.0) -> None:
    """Print until cancelled; the caller owns the lifetime."""
    start = time.monotonic()
    while True:
        await asyncio.sleep(every)
        elapsed = time.monotonic() - start
        print(f"  [{label}] {elapsed:5.1f}s {progress.line()}", file=sys.stderr, flush=True)


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll a cheap condition every POLL seconds, at most `timeout` seconds."""
    for _ in range(max(1, round(timeout / POLL))):
        if condition():
            return
        await asyncio.sleep(POLL)
