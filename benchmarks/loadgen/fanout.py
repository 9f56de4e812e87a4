"""S3 fan-out: N subscribers on one channel, one publisher, latency of every delivery.

Each published message carries `bench:<seq>:<monotonic send time>` as its data.
CLOCK_MONOTONIC is shared by every process on the machine, so a subscriber computes
publish-to-receive latency from the message alone, whichever process published it.
"""

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import http
from .progress import Progress, wait_until
from .sse import Event
from .stream import StreamResult, stream_events

CHANNEL = "bench"
STAMP = re.compile(rb"bench:(\d+):(\d+\.\d+)")
PUBLISH_TIMEOUT = 10.0
SETTLE_SECONDS = 1.0  # after the last subscriber's headers, before the first publish


@dataclass(frozen=True)
class FanoutConfig:
    port: int
    clients: int
    messages: int
    publish_interval: float
    deadline: float  # seconds to subscribe everyone, and again to drain after publishing


#: The comment a channel stream writes once it is live.
LIVE_MARK = b"\n: live\n\n"


class NotAvailable(Exception):
    """The server has no channel endpoints (e.g. the template before channels landed)."""


class Subscriber:
    __slots__ = ("latencies", "result", "seen")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.result = StreamResult()


async def subscribe(
    config: FanoutConfig, sub: Subscriber, progress: Progress, done: asyncio.Event
) -> None:
    def on_open() -> None:
        progress.connected += 1
        progress.ready += 1

    path = f"/channels/{CHANNEL}/events"
    await follow_stamped(config.port, path, STAMP, config.messages, sub, progress, done, on_open)


async def follow_stamped(
    port: int,
    path: str,
    stamp: re.Pattern[bytes],
    messages: int,
    sub: Subscriber,
    progress: Progress,
    done: asyncio.Event,
    on_open: Callable[[], None],
) -> None:
    """Read `path` until `messages` stamped messages arrived (or `done`), timing each."""

    def on_event(now: float, event: Event) -> bool:
        match = stamp.search(event.data)
        if match is None:
            return False
        seq = int(match.group(1))
        if seq not in sub.seen:
            sub.seen.add(seq)
            sub.latencies.append(now - float(match.group(2)))
            progress.events += 1
        if len(sub.seen) == messages:
            progress.done += 1
            return True
        return False

    # Subscribed once the server says `: live` (the baked app after its channel's
    # SUBSCRIBE is confirmed; bare_broadcast at once): a message published before that
    # is not this subscriber's, and counting it would count a miss that is not one.
    task = asyncio.ensure_future(
        stream_events(port, path, sub.result, on_open, on_event, ready_mark=LIVE_MARK)
    )
    await asyncio.wait([task, asyncio.ensure_future(done.wait())], return_when="FIRST_COMPLETED")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if sub.result.error:
        progress.failed += 1


async def read_answer(reader: asyncio.StreamReader) -> int:
    status, headers = await http.read_head(reader)
    await http.read_body(reader, http.decoder_for(headers))
    return status


async def publish_all(config: FanoutConfig) -> list[int]:
    """Publish on one keep-alive connection at absolute times; return the HTTP statuses."""
    reader, writer = await asyncio.open_connection(http.HOST, config.port)
    statuses: list[int] = []
    start = time.monotonic()
    try:
        for seq in range(1, config.messages + 1):
            delay = start + (seq - 1) * config.publish_interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = json.dumps({"data": f"bench:{seq}:{time.monotonic():.6f}"}).encode()
            path = f"/channels/{CHANNEL}/messages"
            writer.write(
                http.build_request("POST", path, config.port, body, Content_Type="application/json")
            )
            # Bounded: a server that never answers a publish must not stall the run.
            status = await asyncio.wait_for(read_answer(reader), PUBLISH_TIMEOUT)
            statuses.append(status)
            if status == 404:
                raise NotAvailable(f"POST {path} answered 404")
    finally:
        writer.close()
    return statuses


async def run(config: FanoutConfig, progress: Progress) -> dict[str, Any]:
    subs = [Subscriber() for _ in range(config.clients)]
    publish_error: str | None = None
    done = asyncio.Event()
    tasks = [asyncio.ensure_future(subscribe(config, s, progress, done)) for s in subs]
    try:
        await wait_until(
            lambda: progress.ready + progress.failed >= config.clients, config.deadline
        )
        if progress.ready == 0:
            raise NotAvailable(f"no subscriber connected ({first_error(subs)})")
        await asyncio.sleep(SETTLE_SECONDS)
        try:
            statuses = await publish_all(config)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            statuses, publish_error = [], f"publish failed: {type(exc).__name__} {exc}"
        await wait_until(lambda: progress.done + progress.failed >= config.clients, config.deadline)
    finally:
        done.set()
        await asyncio.gather(*tasks)
    errors: dict[str, int] = {}
    for sub in subs:
        if sub.result.error:
            errors[sub.result.error] = errors.get(sub.result.error, 0) + 1
    return {
        "clients": config.clients,
        "subscribed": sum(1 for s in subs if s.result.status == 200),
        "published": sum(1 for s in statuses if 200 <= s < 300),
        "publish_statuses": sorted(set(statuses)),
        "deliveries": sum(len(s.latencies) for s in subs),
        "expected": config.clients * config.messages,
        "complete_subscribers": sum(1 for s in subs if len(s.seen) == config.messages),
        "errors": errors | ({publish_error: 1} if publish_error else {}),
        "latency": [round(x, 5) for s in subs for x in s.latencies],
    }


def first_error(subs: list[Subscriber]) -> str:
    return next((s.result.error for s in subs if s.result.error), "no error recorded")
