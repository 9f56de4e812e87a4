"""S2 hold: N idle connections; the server's RSS growth divided by the connections held.

The server is started with a very long interval, so every client gets event 1 and then
sits idle. RSS is read from /proc of the server process after a short warm-up (imports
and first-request caches must not be charged to the connections) and again once every
client is holding, after a settle pause.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

from ..procstat import rss_bytes
from .progress import Progress, wait_until
from .sse import Event
from .stream import StreamResult, stream_events

WARMUP_CLIENTS = 2
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class HoldConfig:
    port: int
    clients: int
    server_pid: int
    deadline: float  # seconds to get every client to its first event


async def hold_client(port: int, progress: Progress, held: asyncio.Event) -> StreamResult:
    result = StreamResult()
    got_first = False

    def on_open() -> None:
        progress.connected += 1

    def on_event(now: float, event: Event) -> bool:
        nonlocal got_first
        if not got_first:
            got_first = True
            progress.ready += 1
        return False

    task = asyncio.ensure_future(stream_events(port, "/events", result, on_open, on_event))
    # Keep the connection open until the measurement is done (or the stream fails).
    await asyncio.wait([task, asyncio.ensure_future(held.wait())], return_when="FIRST_COMPLETED")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if result.error:
        progress.failed += 1
    return result


async def connect_and_hold(
    config: HoldConfig, clients: int, progress: Progress, measure: bool
) -> dict[str, Any]:
    release = asyncio.Event()
    tasks = [
        asyncio.ensure_future(hold_client(config.port, progress, release)) for _ in range(clients)
    ]
    target = progress.ready + clients
    await wait_until(lambda: progress.ready + progress.failed >= target, config.deadline)
    held = clients - (target - progress.ready)
    rss_after = 0
    if measure:
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = rss_bytes(config.server_pid)
    release.set()
    results = await asyncio.gather(*tasks)
    errors: dict[str, int] = {}
    for result in results:
        if result.error:
            errors[result.error] = errors.get(result.error, 0) + 1
    return {"held": held, "rss_after": rss_after, "errors": errors}


async def run(config: HoldConfig, progress: Progress) -> dict[str, Any]:
    await connect_and_hold(config, WARMUP_CLIENTS, Progress(), measure=False)
    await asyncio.sleep(SETTLE_SECONDS)
    rss_before = rss_bytes(config.server_pid)
    outcome = await connect_and_hold(config, config.clients, progress, measure=True)
    held = outcome["held"]
    growth = outcome["rss_after"] - rss_before
    return {
        "clients": config.clients,
        "held": held,
        "rss_before": rss_before,
        "rss_after": outcome["rss_after"],
        "rss_per_conn": growth / held if held else None,
        "errors": outcome["errors"],
    }
