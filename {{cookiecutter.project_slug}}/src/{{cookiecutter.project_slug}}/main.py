"""The web app: routes only; the work happens in the modules they call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .broker import BrokerUnavailable, create_broker
from .channels import add_channel_routes
from .demo import EVENT_SCHEMA, BadLastEventId, count_messages, parse_last_event_id
from .demo_login import add_demo_login
from .gc_tuning import settle_after_startup
from .hub import StreamHub
from .lifespan import ExplainRefusedStartup, StartupRefused
from .logs import configure_logging
from .metrics import Metrics
from .routing import StreamingFastAPI, resume_point
from .settings import Settings, load_settings
from .stream import EventStreamResponse

HERE = Path(__file__).parent
TITLE = {{ cookiecutter.__project_name | python_string }}
#: What /events resumes after: the number of the last message the client has.
MessageNumber = resume_point(pattern=r"^[0-9]{1,20}$")


def create_app(settings: Settings | None = None) -> StreamingFastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    hub = StreamHub(
        heartbeat_interval=settings.heartbeat_interval,
        max_pending=settings.subscriber_queue,
        send_timeout=settings.send_timeout,
        max_clients=settings.max_clients,
        retry_jitter=settings.retry_jitter,
        metrics=metrics,
    )
    broker = create_broker(settings)
    templates = Jinja2Templates(directory=HERE / "templates")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await broker.start()
        except BrokerUnavailable as exc:
            # Refusing to start beats serving a worker that cannot deliver anything: the
            # process manager shows this line and restarts it.
            raise StartupRefused(f"Cannot start: {exc}") from None
        await hub.start()
        settle_after_startup()
        yield
        await hub.stop()
        await broker.stop()

    app = StreamingFastAPI(title=TITLE, lifespan=lifespan)
    app.add_middleware(ExplainRefusedStartup)
    app.state.settings = settings
    app.state.hub = hub
    app.state.broker = broker
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            "index.html",
            {"title": TITLE, "count": settings.message_count, "demo_login": settings.demo_login},
        )

    @app.stream(
        "/events",
        response_class=EventStreamResponse,
        responses={
            200: {
                "description": "Message 1..count, then an `end` event.",
                "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            },
            204: {"description": "Nothing left to send: Last-Event-ID is the last message."},
            400: {"description": "Last-Event-ID is not a whole number >= 0."},
            503: {"description": "This worker holds SSE_MAX_CLIENTS streams; see Retry-After."},
        },
    )
    async def events(last_event_id: MessageNumber = None) -> Response:
        """The demo stream: each client gets its own Message 1..count."""
        try:
            after = parse_last_event_id(last_event_id)
        except BadLastEventId as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        if after >= settings.message_count:
            # 204 is the one answer that makes EventSource stop reconnecting.
            return Response(status_code=204)
        source = partial(
            count_messages,
            after=after,
            count=settings.message_count,
            interval=settings.message_interval,
        )
        return EventStreamResponse(hub, source, retry_ms=settings.retry_ms)

    add_channel_routes(app, hub, broker, settings)
    if settings.demo_login:
        add_demo_login(app, settings)

    @app.get(
        "/healthz",
        responses={503: {"description": "The broker is unreachable; `reason` says why."}},
    )
    async def healthz() -> Response:
        problem = await broker.check()
        body: dict[str, object] = {
            "status": "ok" if problem is None else "unavailable",
            "streams": len(hub.streams),
            "broker": broker.name,
        }
        if problem is not None:
            body["reason"] = problem
        return JSONResponse(body, status_code=200 if problem is None else 503)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # What this worker counted since the hub's timer last caught up is counted now.
        hub.catch_up_metrics()
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return app


app = create_app()
