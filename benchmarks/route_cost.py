"""What each part of a stream route costs per connect: `python -m benchmarks.route_cost`.

In-process: requests are driven straight into each ASGI app (no sockets, no server), and
every response is one tiny event, so the numbers are the request path alone, the part of
a stream's set-up that routing, middleware and dependencies add. CPU time per request,
median of three rounds, side by side in one run:

- bare ASGI: the floor;
- FastAPI: an ordinary path operation with an async resume dependency (FastAPI's handler);
- the baked routing (`StreamRouter.stream`): lean, then with a user's CORSMiddleware,
  then with a dependency that takes only the `Request` (called by the lean handler, as
  the channels' authorization is), then with one that declares a `Header` (FastAPI's
  handler, as any other declared dependency gets);
- the baked app itself: its `/events` route, with and without CORSMiddleware.

Run it with the template baked (it bakes the default project into a temporary folder).
"""

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response

from . import bake

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CHANNEL = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ORIGIN = "http://127.0.0.1"


class OneEvent(Response):
    """The smallest stream: headers and one event, so only the request path is measured."""

    def __init__(self) -> None:
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": False})


async def bare(scope: Any, receive: Any, send: Any) -> None:
    await OneEvent()(scope, receive, send)


async def resume(
    header: Annotated[str | None, Header(alias="last-event-id")] = None,
    query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> str | None:
    return header if header is not None else query


def fastapi_route() -> FastAPI:
    app = FastAPI()

    @app.get("/channels/{channel}/events")
    async def subscribe(channel: CHANNEL, last_event_id: Annotated[Any, Depends(resume)] = None):
        return OneEvent()

    return app


def stream_routes(package: str, *, cors: bool, dependency: str = "") -> FastAPI:
    routing = importlib.import_module(f"{package}.routing")
    app = routing.StreamingFastAPI()
    if cors:
        app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])
    resume_point = routing.resume_point(pattern=r"^[0-9]+-[0-9]+$")

    # Like the channels' read_channel: a Request-only dependency, called by the lean
    # handler itself. With a declared Header, it takes FastAPI's handler.
    async def who(request: Request) -> str:
        return request.headers.get("authorization", "anyone")

    async def who_by_header(authorization: Annotated[str | None, Header()] = None) -> str:
        return authorization or "anyone"

    extra = {"": [], "request": [Depends(who)], "header": [Depends(who_by_header)]}[dependency]

    @app.stream("/channels/{channel}/events", dependencies=extra)
    async def subscribe(channel: CHANNEL, last_event_id: resume_point = None) -> Response:
        return OneEvent()

    return app


def baked_app(package: str, *, cors: bool) -> ASGIApp:
    main = importlib.import_module(f"{package}.main")
    app = main.create_app(main.Settings(message_count=1, message_interval=0))
    if cors:
        app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])
    return app  # type: ignore[no-any-return]


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"accept", b"text/event-stream"),
            (b"origin", ORIGIN.encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def cost_us(app: ASGIApp, path: str, requests: int) -> float:
    """CPU microseconds per request, median of three rounds after a warm-up."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def round_of(n: int) -> float:
        sent.clear()
        started = time.process_time()
        for _ in range(n):
            await app(scope_for(path), receive, send)
        elapsed = time.process_time() - started
        if sent[0].get("status") != 200:
            raise RuntimeError(f"{path} answered {sent[0].get('status')}: {sent[1:2]}")
        return elapsed / n * 1e6

    await round_of(min(requests, 200))
    rounds = sorted([await round_of(requests) for _ in range(3)])
    return rounds[1]


async def run(package: str, requests: int) -> list[tuple[str, float]]:
    channel = "/channels/news/events"
    cases: list[tuple[str, ASGIApp, str]] = [
        ("bare ASGI", bare, channel),
        ("FastAPI path operation, async resume dependency", fastapi_route(), channel),
        ("stream route (lean)", stream_routes(package, cors=False), channel),
        ("stream route + CORSMiddleware", stream_routes(package, cors=True), channel),
        (
            "stream route + CORS + a Request-only dependency",
            stream_routes(package, cors=True, dependency="request"),
            channel,
        ),
        (
            "stream route + CORS + a dependency with a Header",
            stream_routes(package, cors=True, dependency="header"),
            channel,
        ),
    ]
    results = [(name, await cost_us(app, path, requests)) for name, app, path in cases]
    # The baked app's own route writes a real stream: the difference to the lean route is
    # the demo's own work (hub, retry, frames), not routing.
    for cors in (False, True):
        app = baked_app(package, cors=cors)
        name = "baked app GET /events" + (" + CORSMiddleware" if cors else "")
        results.append((name, await cost_us(app, "/events", requests)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.route_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="requests per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sse-route-cost-") as tmp:
        src = bake.bake("memory", Path(tmp))
        sys.path.insert(0, str(src))
        package = bake.app_module(src).partition(".")[0]
        results = asyncio.run(run(package, args.requests))
    floor = results[0][1]
    for name, us in results:
        print(f"{name:55s} {us:7.1f} us/request  (+{us - floor:6.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
