"""S1 storm: N clients connect at once to `/events` and read every event.

Lateness of event i (1-based) = its arrival - (the moment the client's TCP connection
was established + (i-1) x interval): how far behind an ideal server the client is.
Events still missing at the deadline count with the lateness they had reached by then,
so a starved server shows a lower bound ("at least") instead of looking fast on the few
clients it served.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .progress import Progress
from .sse import Event
from .stream import StreamResult, stream_events


@dataclass(frozen=True)
class StormConfig:
    port: int
    clients: int
    count: int
    interval: float
    deadline: float  # seconds from start; clients still reading then are cancelled


class StormClient:
    __slots__ = ("arrivals", "ended", "result", "started")

    def __init__(self) -> None:
        self.started = 0.0
        self.arrivals: list[float] = []
        self.ended = False
        self.result = StreamResult()

    def complete(self, count: int) -> bool:
        return len(self.arrivals) == count and (self.ended or self.result.eof)


async def run_client(config: StormConfig, client: StormClient, progress: Progress) -> None:
    def on_open() -> None:
        progress.connected += 1

    def on_event(now: float, event: Event) -> bool:
        if event.event == b"end":
            client.ended = True
            return True
        client.arrivals.append(now)
        progress.events += 1
        if len(client.arrivals) == 1:
            progress.ready += 1
        return False

    client.started = time.monotonic()
    await stream_events(config.port, "/events", client.result, on_open, on_event)
    if client.complete(config.count):
        progress.done += 1
    else:
        progress.failed += 1


async def run(config: StormConfig, progress: Progress) -> dict[str, Any]:
    clients = [StormClient() for _ in range(config.clients)]
    tasks = [asyncio.ensure_future(run_client(config, c, progress)) for c in clients]
    _, pending = await asyncio.wait(tasks, timeout=config.deadline)
    for task in pending:
        task.cancel()
    stopped = time.monotonic()
    await asyncio.gather(*pending, return_exceptions=True)
    return summarize(config, clients, stopped)


def summarize(config: StormConfig, clients: list[StormClient], stopped: float) -> dict[str, Any]:
    ttfe: list[float] = []
    lateness: list[float] = []
    censored = 0
    errors: dict[str, int] = {}
    for client in clients:
        # Clock starts when the TCP connection is up: everything after that (accept,
        # request parsing, the app) is the server's; before it, the load generator was
        # still creating thousands of sockets one after another.
        connected = client.result.connected_at
        t0 = connected if connected is not None else client.started
        if client.arrivals:
            ttfe.append(client.arrivals[0] - t0)
        for i in range(config.count):
            due = t0 + i * config.interval
            if i < len(client.arrivals):
                lateness.append(client.arrivals[i] - due)
            elif stopped > due:
                lateness.append(stopped - due)
                censored += 1
        if client.result.error:
            errors[client.result.error] = errors.get(client.result.error, 0) + 1
    return {
        "clients": config.clients,
        "connected": sum(1 for c in clients if c.result.status == 200),
        "first_event": len(ttfe),
        "completed": sum(1 for c in clients if c.complete(config.count)),
        "events": sum(len(c.arrivals) for c in clients),
        "errors": errors,
        "ttfe": [round(x, 5) for x in ttfe],
        "lateness": [round(x, 5) for x in lateness],
        "censored": censored,
    }
