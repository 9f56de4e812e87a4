"""Stream routes keep FastAPI's contract: middleware, dependencies, validation, handlers.

Each test adds to the app what a user would (a middleware, a dependency, a router) and
checks, through a real server, that the stream honours it.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoints' annotations at
# run time, and some name types local to their test.
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated

import fastapi.routing
import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Host
from starlette.types import Message, Receive, Scope, Send

from {{ cookiecutter.project_slug }}.main import create_app
from {{ cookiecutter.project_slug }}.routing import (
    StreamingFastAPI,
    StreamRouteError,
    StreamRouter,
    resume_point,
)
from {{ cookiecutter.project_slug }}.settings import Settings
from {{ cookiecutter.project_slug }}.sse import encode_event
from {{ cookiecutter.project_slug }}.stream import EventStream, EventStreamResponse

import conftest
from conftest import RunningServer

ORIGIN = "http://elsewhere.example"


@pytest.fixture
def serve_with(serve, monkeypatch: pytest.MonkeyPatch) -> Callable[..., RunningServer]:
    """`serve_with(customize, **settings)`: the app, changed by `customize(app)` first."""

    def start(customize: Callable[[StreamingFastAPI], None], **settings: object) -> RunningServer:
        def build(settings: Settings) -> StreamingFastAPI:
            app = create_app(settings)
            customize(app)
            return app

        monkeypatch.setattr(conftest, "create_app", build)
        return serve(**{"message_count": 2, "message_interval": 0, **settings})

    return start


def events_of(response: httpx.Response) -> list[str]:
    """The data lines of a stream, without the demo's empty `end` event."""
    return [line for line in response.iter_lines() if line.startswith("data:") and line[6:]]


def one(app: StreamingFastAPI, text: str) -> EventStreamResponse:
    """A stream of one event, on the app's own hub."""

    async def source(stream: EventStream) -> AsyncIterator[bytes]:
        yield encode_event(text)

    return EventStreamResponse(app.state.hub, source, retry_ms=1000)


# -- middleware ------------------------------------------------------------------------


def test_cors_middleware_runs_for_the_streams(serve_with, client: httpx.Client):
    """A cross-origin EventSource needs the CORS headers on the stream itself."""

    def customize(app: StreamingFastAPI) -> None:
        app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])

    running = serve_with(customize)
    for path in ("/events", "/channels/cors/events"):
        with client.stream("GET", running.url + path, headers={"Origin": ORIGIN}) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == ORIGIN, path
    preflight = client.options(
        running.url + "/events",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN


def test_pure_asgi_middleware_sees_the_stream(serve_with, client: httpx.Client):
    seen: list[str] = []

    class Tag:
        def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            seen.append(scope["path"])

            async def tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-seen", b"yes")]
                await send(message)

            await self.app(scope, receive, tagged)

    running = serve_with(lambda app: app.add_middleware(Tag))
    response = client.get(running.url + "/events")
    assert response.headers["x-seen"] == "yes"
    assert events_of(response) == ["data: Message 1", "data: Message 2"]
    assert seen == ["/events"]


def test_base_http_middleware_runs_for_the_streams(serve_with, client: httpx.Client):
    """Starlette's BaseHTTPMiddleware wraps `receive`: the stream still runs and ends."""

    async def stamp(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers["x-stamp"] = request.url.path
        return response

    running = serve_with(lambda app: app.add_middleware(BaseHTTPMiddleware, dispatch=stamp))
    response = client.get(running.url + "/events")
    assert response.headers["x-stamp"] == "/events"
    assert events_of(response) == ["data: Message 1", "data: Message 2"]


# -- dependencies ----------------------------------------------------------------------


async def require_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if authorization != "Bearer letmein":
        raise HTTPException(401, "no entry", headers={"WWW-Authenticate": "Bearer"})
    return "alice"


def test_route_dependencies_run_and_can_refuse(serve_with, client: httpx.Client):
    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/private", dependencies=[Depends(require_token)])
        async def private() -> Response:
            return one(app, "secret")

    running = serve_with(customize)
    refused = client.get(running.url + "/private")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "no entry"}
    assert refused.headers["www-authenticate"] == "Bearer"
    allowed = client.get(running.url + "/private", headers={"Authorization": "Bearer letmein"})
    assert events_of(allowed) == ["data: secret"]


def test_parameters_get_their_dependencies_values(serve_with, client: httpx.Client):
    Resume = resume_point(pattern=r"^[0-9]+$")

    def user_agent(request: Request) -> str:
        return request.headers["user-agent"]

    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/whoami")
        async def whoami(
            request: Request,
            user: str = Depends(require_token),
            agent: Annotated[str, Depends(user_agent)] = "",
            last_event_id: Resume = None,
        ) -> Response:
            return one(app, f"{user} {agent} {request.url.path} {last_event_id}")

    running = serve_with(customize)
    headers = {"Authorization": "Bearer letmein", "User-Agent": "ua", "Last-Event-ID": "7"}
    assert events_of(client.get(running.url + "/whoami", headers=headers)) == [
        "data: alice ua /whoami 7"
    ]


def test_router_and_include_dependencies_run(serve_with, client: httpx.Client):
    """Both the router's own and the include_router() call's dependencies apply."""
    calls: list[str] = []

    async def router_level() -> None:
        calls.append("router")

    async def include_level(x_team: Annotated[str, Header()]) -> None:
        calls.append(x_team)

    def customize(app: StreamingFastAPI) -> None:
        router = StreamRouter(dependencies=[Depends(router_level)])

        @router.stream("/feed/{number}")
        async def feed(number: int) -> Response:
            return one(app, f"feed {number + 1}")

        app.include_router(router, prefix="/team", dependencies=[Depends(include_level)])
        # Its route declares nothing: only the include_router() call adds a dependency.
        plain = StreamRouter()

        @plain.stream("/news")
        async def news() -> Response:
            return one(app, "news")

        app.include_router(plain, prefix="/team", dependencies=[Depends(include_level)])

    running = serve_with(customize)
    for path in ("/team/feed/1", "/team/news"):
        assert client.get(running.url + path).status_code == 422, path  # no X-Team header
    calls.clear()
    response = client.get(running.url + "/team/feed/41", headers={"X-Team": "blue"})
    assert events_of(response) == ["data: feed 42"]
    assert sorted(calls) == ["blue", "router"]
    calls.clear()
    assert events_of(client.get(running.url + "/team/news", headers={"X-Team": "red"})) == [
        "data: news"
    ]
    assert calls == ["red"]


def test_a_yield_dependency_is_open_for_the_whole_stream(serve_with, client: httpx.Client):
    """Like a database session a stream reads from: closed after the stream, not before."""
    log: list[str] = []

    async def session() -> AsyncIterator[str]:
        log.append("open")
        yield "session"
        log.append("closed")

    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/reads")
        async def reads(db: Annotated[str, Depends(session)]) -> Response:
            async def source(stream: EventStream) -> AsyncIterator[bytes]:
                log.append(f"streaming with {db}")
                yield encode_event("row")

            return EventStreamResponse(app.state.hub, source, retry_ms=1000)

    running = serve_with(customize)
    response = client.get(running.url + "/reads")
    assert response.status_code == 200, response.text
    assert events_of(response) == ["data: row"]
    assert log == ["open", "streaming with session", "closed"]


def test_dependency_overrides_apply_to_streams(serve_with, client: httpx.Client):
    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/me")
        async def me(user: str = Depends(require_token)) -> Response:
            return one(app, user)

        app.dependency_overrides[require_token] = lambda: "test-user"

    running = serve_with(customize)
    assert events_of(client.get(running.url + "/me")) == ["data: test-user"]


# -- validation and exceptions ---------------------------------------------------------


def test_path_and_query_parameters_are_typed_and_validated(serve_with, client: httpx.Client):
    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/count/{start}")
        async def count(
            start: Annotated[int, Path(ge=0)], step: Annotated[int, Query(gt=0)] = 1
        ) -> Response:
            return one(app, f"{start + step}")

    running = serve_with(customize)
    assert events_of(client.get(running.url + "/count/40?step=2")) == ["data: 42"]
    for bad in ("/count/x", "/count/-1", "/count/1?step=0"):
        response = client.get(running.url + bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["type"], bad


def test_a_bad_channel_name_gets_fastapis_422(server: RunningServer, client: httpx.Client):
    response = client.get(server.url + "/channels/no%20spaces/events")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "channel"]


def test_exceptions_reach_their_handlers(serve_with, client: httpx.Client):
    class OutOfTickets(Exception):
        pass

    def customize(app: StreamingFastAPI) -> None:
        @app.exception_handler(OutOfTickets)
        async def sold_out(request: Request, exc: OutOfTickets) -> Response:
            return JSONResponse({"detail": "sold out"}, status_code=409)

        @app.stream("/forbidden")
        async def forbidden() -> Response:
            raise HTTPException(403, "not yours")

        @app.stream("/tickets")
        async def tickets() -> Response:
            raise OutOfTickets

    running = serve_with(customize)
    forbidden = client.get(running.url + "/forbidden")
    assert (forbidden.status_code, forbidden.json()) == (403, {"detail": "not yours"})
    sold_out = client.get(running.url + "/tickets")
    assert (sold_out.status_code, sold_out.json()) == (409, {"detail": "sold out"})


# -- the lean handler, and what stream routes refuse -----------------------------------


def test_only_declared_dependencies_are_solved(
    serve_with, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    """/events declares nothing to solve; a stream with a dependency gets it solved."""
    solved: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(**kwargs):
        solved.append(kwargs["request"].url.path)
        return await original(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)

    async def only_the_request(request: Request) -> str:
        if "x-pass" not in request.headers:
            raise HTTPException(403, "no pass")
        return request.headers["x-pass"]

    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/me")
        async def me(user: str = Depends(require_token)) -> Response:
            return one(app, user)

        # Called as FastAPI would call it, without FastAPI's solver (like read_channel).
        @app.stream("/pass/{n}", dependencies=[Depends(only_the_request)])
        async def with_pass(n: int, holder: Annotated[str, Depends(only_the_request)]) -> Response:
            return one(app, f"{holder} {n + 1}")

    running = serve_with(customize)
    assert events_of(client.get(running.url + "/events?last_event_id=1")) == ["data: Message 2"]
    assert client.get(running.url + "/me").status_code == 401
    refused = client.get(running.url + "/pass/1")
    assert (refused.status_code, refused.json()) == (403, {"detail": "no pass"})
    assert client.get(running.url + "/pass/x", headers={"X-Pass": "p"}).status_code == 422
    allowed = client.get(running.url + "/pass/41", headers={"X-Pass": "pass"})
    assert events_of(allowed) == ["data: pass 42"]
    assert solved == ["/me"]


# -- StreamDispatch: the router's choice, made before FastAPI's inner layers ------------


def test_lean_streams_go_past_fastapis_inner_layers(
    serve_with, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    """A lean stream is called from StreamDispatch (what S1 and S2 in benchmarks/ measure);
    a stream FastAPI must solve, and every other route, take FastAPI's way."""
    seen: list[str] = []
    original = ExceptionMiddleware.__call__

    async def counting(self: ExceptionMiddleware, scope: Scope, receive: Receive, send: Send):
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(ExceptionMiddleware, "__call__", counting)

    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/me")
        async def me(user: str = Depends(require_token)) -> Response:
            return one(app, user)

    running = serve_with(customize)
    assert events_of(client.get(running.url + "/events")) == ["data: Message 1", "data: Message 2"]
    assert client.get(running.url + "/channels/lean/events?last_event_id=x").status_code == 400
    assert client.get(running.url + "/me").status_code == 401
    assert client.get(running.url + "/healthz").status_code == 200
    assert client.head(running.url + "/events").status_code == 405  # GET only
    assert seen == ["/me", "/healthz", "/events"]


def test_the_route_the_router_would_pick_answers(serve_with, client: httpx.Client):
    """An earlier route that matches the same request wins, as in FastAPI's router:
    a plain route, a mount, and a route that matches by more than its path."""

    async def files(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("mounted")(scope, receive, send)

    def customize(app: StreamingFastAPI) -> None:
        @app.get("/first")
        async def first() -> str:
            return "plain"

        @app.stream("/first")
        async def first_stream() -> Response:
            return one(app, "stream")

        app.mount("/files", files)

        @app.stream("/files/{name}")
        async def file_stream(name: str) -> Response:
            return one(app, name)

        app.router.routes.append(Host("other.example", app=files))

        @app.stream("/hosted")
        async def hosted() -> Response:
            return one(app, "any host")

    running = serve_with(customize)
    assert client.get(running.url + "/first").json() == "plain"
    assert client.get(running.url + "/files/a").text == "mounted"
    elsewhere = client.get(running.url + "/hosted", headers={"Host": "other.example"})
    assert elsewhere.text == "mounted"
    assert events_of(client.get(running.url + "/hosted")) == ["data: any host"]


@pytest.mark.skipif(
    "max_body_size" not in inspect.signature(APIRoute).parameters,
    reason="this FastAPI has no per-route body limit",
)
def test_a_routes_body_limit_holds_for_a_dependency_that_reads_the_body(
    serve_with, client: httpx.Client
):
    """A route's own limits are FastAPI's to enforce: such a stream takes FastAPI's way."""

    async def body_size(request: Request) -> int:
        return len(await request.body())

    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/sized", max_body_size=10)
        async def sized(size: Annotated[int, Depends(body_size)]) -> Response:
            return one(app, str(size))

    running = serve_with(customize)
    small = client.request("GET", running.url + "/sized", content=b"x" * 5)
    assert events_of(small) == ["data: 5"]
    assert client.request("GET", running.url + "/sized", content=b"x" * 100).status_code == 413


def test_an_unhandled_exception_in_a_lean_stream_is_a_500(serve_with, client: httpx.Client):
    def customize(app: StreamingFastAPI) -> None:
        @app.stream("/broken")
        async def broken() -> Response:
            raise RuntimeError("a bug")

    running = serve_with(customize)
    response = client.get(running.url + "/broken")
    assert (response.status_code, response.text) == (500, "Internal Server Error")


@pytest.fixture
def router() -> Iterator[StreamRouter]:
    yield StreamRouter()


async def _endpoint() -> Response:
    return Response()


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"methods": ["POST"]}, "GET only"),
        ({"response_model": dict}, "no response model"),
        ({"status_code": 201}, "answers 200"),
    ],
)
def test_options_a_stream_cannot_honour_are_refused(
    router: StreamRouter, options: dict[str, object], reason: str
):
    with pytest.raises(StreamRouteError, match=rf"stream route /x .*_endpoint.*{reason}"):
        router.stream("/x", **options)(_endpoint)


def test_an_endpoint_that_yields_is_refused(router: StreamRouter):
    async def ticks() -> AsyncIterator[str]:
        yield "tick"

    with pytest.raises(StreamRouteError, match=r"stream route /ticks .*ticks.*yields"):
        router.stream("/ticks")(ticks)


def test_stream_routes_are_ordinary_fastapi_routes():
    """In the OpenAPI schema and on the router: GET operations like any other."""
    app = FastAPI()
    router = StreamRouter()
    router.stream("/x")(_endpoint)
    app.include_router(router, prefix="/p")
    assert list(app.openapi()["paths"]["/p/x"]) == ["get"]
