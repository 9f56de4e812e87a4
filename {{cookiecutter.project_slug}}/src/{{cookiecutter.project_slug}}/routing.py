"""Stream routes: ordinary FastAPI routes, with a lean handler where nothing is declared.

`@router.stream(path)` (on the app or on any `StreamRouter`) declares a GET route whose
endpoint returns a stream response. It is a FastAPI route in every way a user relies on:
the app's middleware runs for it, route-, router- and app-level `dependencies` run, its
parameters may use `Depends`, `Header`, `Cookie`, `Query`, `Path` and `Request` with
FastAPI's validation (422), and an `HTTPException` or any exception with a registered
handler becomes that handler's response.

What it saves is only what an endpoint does not use. A FastAPI path operation costs
about 80 us of CPU per request, and a lean stream route 18 us, measured in-process with the
template repository's benchmarks/route_cost.py; a reconnect storm opens thousands of
streams at once. An endpoint that declares nothing beyond its path parameters, resume
points (see `resume_point`) and dependencies that take only the `Request` (as the
channels' authorization does) is called by a handler that does exactly that and nothing
else; any other declaration gets FastAPI's own handler, whole. Whatever a
stream route cannot honour is refused when it is declared (`StreamRouteError`).

On a `StreamingFastAPI` app, a lean stream route of the app itself is also called
earlier: from StreamDispatch, the innermost of the app's middleware, which makes the
router's choice itself and so spares each stream the layers after it (see there).
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of
# resume_point()'s inner function at run time.
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qsl

import fastapi.routing
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.datastructures import Default, DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette import routing
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette._utils import get_route_path
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

#: A stream endpoint returns the response that writes the stream (or an error response).
StreamEndpoint = Callable[..., Awaitable[Response]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
#: The `resolve` functions made by resume_point(): the lean handler reads them directly.
_RESUME_POINTS: set[Callable[..., Any]] = set()


class StreamRouteError(TypeError):
    """A stream route declared with something it cannot honour."""


def resume_point(pattern: str) -> Any:
    """The type of a stream's resume point: the Last-Event-ID header, else ?last_event_id=.

    The value arrives as sent, unvalidated: a stream answers a bad id itself, with 400 and
    a reason (an `EventSource` retrying with a broken id must learn why, and FastAPI's 422
    would name only the pattern). `pattern` documents the ids the stream accepts.
    """

    # Async: FastAPI runs a sync dependency in its threadpool, ~300 us per stream.
    # `str`, not `str | None`, in the schema: a header or query parameter is absent,
    # never null.
    async def resolve(
        header: Annotated[
            str,  # noqa: RUF013
            Header(
                alias="last-event-id",
                description="The id of the last event the client has.",
                json_schema_extra={"pattern": pattern},
            ),
        ] = None,
        query: Annotated[
            str,  # noqa: RUF013
            Query(
                alias="last_event_id",
                description="Same as the Last-Event-ID header, for clients that cannot set "
                "headers (a new EventSource); the header wins.",
                json_schema_extra={"pattern": pattern},
            ),
        ] = None,
    ) -> str | None:
        return header if header is not None else query

    _RESUME_POINTS.add(resolve)
    return Annotated[str | None, Depends(resolve)]


def resume_id(scope: Scope) -> str | None:
    """What resume_point() resolves, read straight from the scope, as FastAPI reads it."""
    found: str | None = None
    for key, value in scope["headers"]:
        if key == b"last-event-id":
            found = value.decode("latin-1")  # the last one wins, as in Starlette's Headers
    if found is not None or not scope["query_string"]:
        return found
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key == "last_event_id":
            found = value
    return found


class StreamRoute(APIRoute):
    """A GET route for a stream endpoint; see the module's docstring."""

    #: The lean handler of this route as declared (not of an inclusion of it in another
    #: router): what StreamDispatch calls. None where FastAPI's handler is needed.
    lean_handler: Handler | None = None

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        _refuse_what_streams_cannot_honour(path, endpoint, options)
        super().__init__(path, endpoint, **options)

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        dependant = _effective_dependant(self)
        if not _is_lean(dependant):
            return full
        handler = _lean_handler(dependant, self.path, full, self.dependency_overrides_provider)
        if dependant is self.dependant:
            self.lean_handler = handler
        return handler


def _effective_dependant(route: APIRoute) -> Dependant:
    """The dependant FastAPI builds this handler for, with its included routers' dependencies.

    FastAPI 0.16x builds one handler per inclusion of a route and names the inclusion
    (prefix, router-level dependencies) in a context variable while it does; earlier
    versions made a new route per inclusion, whose own dependant has them all.
    tests/test_stream_routes.py fails if a router's dependencies are ever skipped.
    """
    context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    if context is not None and context.original_route is route and context.dependant:
        return context.dependant  # type: ignore[no-any-return]
    return route.dependant


def _is_lean(dependant: Dependant) -> bool:
    """Whether the endpoint declares only path parameters, resume points and `Request`
    dependencies (see `_takes_only_the_request`)."""
    return (
        inspect.iscoroutinefunction(dependant.call)
        and all(
            sub.call in _RESUME_POINTS or _takes_only_the_request(sub)
            for sub in dependant.dependencies
        )
        and _declares_nothing_but(dependant, request=False)
    )


def _takes_only_the_request(dependant: Dependant) -> bool:
    """An `async def` dependency whose one parameter is the `Request`, as the channels'
    `read_channel` is: calling it with the request is all FastAPI would do."""
    return (
        inspect.iscoroutinefunction(dependant.call)
        and dependant.request_param_name is not None
        and not dependant.dependencies
        and not dependant.path_params
        and _declares_nothing_but(dependant, request=True)
    )


def _declares_nothing_but(dependant: Dependant, *, request: bool) -> bool:
    """No query, header, cookie or body parameters, and no special parameter (but the
    `Request` where `request` allows it)."""
    return (
        not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and (request or dependant.request_param_name is None)
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
    )


def _lean_handler(
    dependant: Dependant,
    path: str,
    full: Callable[[Request], Coroutine[Any, Any, Response]],
    overrides_provider: Any,
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """Call the `Request` dependencies, validate the path parameters, read the resume
    points, call the endpoint: in FastAPI's order, with its errors.

    While `app.dependency_overrides` is set (in tests), FastAPI's handler applies it.
    """
    endpoint = dependant.call
    assert endpoint is not None
    path_params = dependant.path_params
    # In declaration order, as FastAPI solves them; one named twice runs once (use_cache).
    steps = [
        (sub.name, sub.call, sub.call in _RESUME_POINTS, sub.use_cache)
        for sub in dependant.dependencies
    ]

    async def handle(request: Request) -> Response:
        if overrides_provider is not None and overrides_provider.dependency_overrides:
            return await full(request)
        scope = request.scope
        values: dict[str, Any] = {}
        solved: dict[Callable[..., Any], Any] = {}
        for name, call, is_resume_point, use_cache in steps:
            if use_cache and call in solved:
                value = solved[call]
            else:
                value = solved[call] = resume_id(scope) if is_resume_point else await call(request)
            if name:
                values[name] = value
        found, errors = request_params_to_args(path_params, scope["path_params"])
        if errors:
            raise RequestValidationError(errors)
        response = await endpoint(**values, **found)
        if not isinstance(response, Response):
            raise TypeError(
                f"stream route {path} returned {type(response).__name__}, not a Response"
            )
        return response

    return handle


def _refuse_what_streams_cannot_honour(
    path: str, endpoint: Callable[..., Any], options: dict[str, Any]
) -> None:
    def refuse(reason: str) -> None:
        raise StreamRouteError(f"stream route {path} ({endpoint.__qualname__}): {reason}")

    if inspect.isasyncgenfunction(endpoint) or inspect.isgeneratorfunction(endpoint):
        # FastAPI would stream what it yields itself: no heartbeat, no shutdown, no limits.
        refuse(
            "the endpoint yields; return EventStreamResponse(hub, source) with the "
            "generator as its source (see stream.Source)"
        )
    if set(options.get("methods") or ["GET"]) != {"GET"}:
        refuse("streams are GET only (EventSource sends nothing else)")
    response_model = options.get("response_model", Default(None))
    if not isinstance(response_model, DefaultPlaceholder) and response_model is not None:
        refuse("a stream has no response model; describe its events in `responses`")
    if options.get("status_code") not in (None, 200):
        refuse("a stream answers 200; return another Response for other statuses")


def add_stream_route(
    router: APIRouter, path: str, endpoint: StreamEndpoint, **options: Any
) -> None:
    options.setdefault("methods", ["GET"])
    router.add_api_route(path, endpoint, route_class_override=StreamRoute, **options)


def _stream_decorator(
    router: APIRouter, path: str, options: dict[str, Any]
) -> Callable[[StreamEndpoint], StreamEndpoint]:
    def register(endpoint: StreamEndpoint) -> StreamEndpoint:
        add_stream_route(router, path, endpoint, **options)
        return endpoint

    return register


class StreamRouter(APIRouter):
    """An APIRouter with `@router.stream(path, ...)` (the options of `@router.get`)."""

    def stream(self, path: str, **options: Any) -> Callable[[StreamEndpoint], StreamEndpoint]:
        return _stream_decorator(self, path, options)


class StreamingFastAPI(FastAPI):
    """FastAPI with `@app.stream(path, ...)` (the options of `@app.get`), and StreamDispatch
    as the innermost of its middleware."""

    def stream(self, path: str, **options: Any) -> Callable[[StreamEndpoint], StreamEndpoint]:
        return _stream_decorator(self.router, path, options)

    def build_middleware_stack(self) -> ASGIApp:
        # Innermost of the user's middleware: theirs run first, then StreamDispatch, then
        # FastAPI's ExceptionMiddleware and router for anything it does not take.
        self.user_middleware.append(Middleware(StreamDispatch, router=self.router))
        try:
            return super().build_middleware_stack()
        finally:
            self.user_middleware.pop()


class StreamDispatch:
    """A GET to a lean stream route of the app goes from here straight to its handler.

    Every request has passed the app's own middleware when it gets here, and what comes
    after is FastAPI's: ExceptionMiddleware, the router, the route's request handling.
    Each of them wraps the whole life of a stream: per stream, a dozen frames (about
    10 KB) and two `send` wrappers that every event goes through. For a lean route
    (see StreamRoute) this layer does what they would do: it picks the route the router
    would pick (the first that matches fully, in order), sets the scope as the router
    does, calls the lean handler, and turns an exception raised before the response into
    the response of the handler registered for it, with Starlette's own code. Anything
    else goes on to FastAPI: another route first in order, a HEAD, overrides set, FastAPI
    telemetry on, a route of an included router.
    """

    def __init__(self, app: ASGIApp, router: APIRouter) -> None:
        self.app = app
        self.router = router
        # The handlers FastAPI registered from app.exception_handlers. Should FastAPI
        # ever put something else here, every request goes on to it.
        self.handlers = (
            (app._exception_handlers, app._status_handlers)
            if isinstance(app, ExceptionMiddleware)
            else None
        )
        self._known: tuple[int, list[tuple[StreamRoute, list[Any] | None]]] = (-1, [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._lean_route(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, child_scope = found
        scope.update(child_scope)
        scope.setdefault("router", self.router)
        request = Request(scope, receive, send)
        assert route.lean_handler is not None
        try:
            response = await route.lean_handler(request)
        except Exception as exc:
            scope["starlette.exception_handlers"] = self.handlers
            # Re-raised unless a handler is registered for it, as FastAPI would.
            await wrap_app_handling_exceptions(_raising(exc), request)(scope, receive, send)
            return
        await response(scope, receive, send)

    def _lean_route(self, scope: Scope) -> tuple[StreamRoute, Scope] | None:
        """The lean stream route the router would pick for this request, if it is one."""
        if scope["method"] != "GET" or self.handlers is None or "fastapi.telemetry" in scope:
            return None
        path = get_route_path(scope)
        for route, before in self._lean_routes():
            if route.path_regex.match(path):
                if before is None or any(pattern.match(path) for pattern in before):
                    return self._first_match(scope)
                match, child_scope = route.matches(scope)
                return (route, child_scope) if match is Match.FULL and _leaner(route) else None
        return None

    def _first_match(self, scope: Scope) -> tuple[StreamRoute, Scope] | None:
        """As the router picks: the first route in order that matches fully."""
        for route in self.router.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                if isinstance(route, StreamRoute) and _leaner(route):
                    return route, child_scope
                return None
        return None

    def _lean_routes(self) -> list[tuple[StreamRoute, list[Any] | None]]:
        """Each lean stream route, with the path patterns of the routes before it.

        A request no earlier route can match goes to the first lean route whose pattern
        it matches, without asking every route before it (what the router does); that
        shortcut is taken only where each of them matches by its path alone (a plain
        route or mount). Otherwise (None) every route is asked in order. Remade when the
        app's routes are added to or removed.
        """
        count, lean = self._known
        routes = self.router.routes
        if count != len(routes):
            lean = []
            before: list[Any] | None = []
            for route in routes:
                if isinstance(route, StreamRoute) and route.lean_handler is not None:
                    lean.append((route, None if before is None else list(before)))
                if before is None or type(route) in _NEVER_HTTP:
                    continue
                if type(route) in _MATCHED_BY_PATH or isinstance(route, StreamRoute):
                    before.append(route.path_regex)
                else:
                    before = None
            self._known = (len(routes), lean)
        return lean


def _leaner(route: StreamRoute) -> bool:
    """Whether StreamDispatch may call this route's lean handler: not while overrides are
    set (in tests), nor for a route with limits on the request body or forms of its own,
    which FastAPI's request handling enforces should a `Request` dependency read them."""
    provider = route.dependency_overrides_provider
    return (
        route.lean_handler is not None
        and not (provider is not None and provider.dependency_overrides)
        and getattr(route, "max_body_size", None) is None
        and not getattr(route, "form_limits", None)
    )


#: Routes whose match of an HTTP request depends on its path alone (and, for a full match,
#: its method), and routes that never match one.
_MATCHED_BY_PATH = frozenset({APIRoute, routing.Route, routing.Mount})
_NEVER_HTTP = frozenset({APIWebSocketRoute, routing.WebSocketRoute})


def _raising(exc: Exception) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return app
