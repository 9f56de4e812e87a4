"""The web app: routes only; the work happens in the modules they call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .demo import BadLastEventId, count_messages, parse_last_event_id
from .hub import StreamHub
from .routing import StreamingFastAPI
from .settings import Settings, load_settings
from .stream import EventStreamResponse

HERE = Path(__file__).parent
TITLE = {{ cookiecutter.project_name | tojson }}


def create_app(settings: Settings | None = None) -> StreamingFastAPI:
    settings = settings or load_settings()
    hub = StreamHub(
        heartbeat_interval=settings.heartbeat_interval,
        send_timeout=settings.send_timeout,
        max_clients=settings.max_clients,
        retry_jitter=settings.retry_jitter,
    )
    templates = Jinja2Templates(directory=HERE / "templates")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        hub.close_on_exit_signals()
        yield
        await hub.stop()

    app = StreamingFastAPI(title=TITLE, lifespan=lifespan)
    app.state.settings = settings
    app.state.hub = hub
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            "index.html",
            {"title": TITLE, "count": settings.message_count},
        )

    @app.stream(
        "/events",
        response_class=EventStreamResponse,
        responses={
            200: {"description": "Message 1..count, then an `end` event."},
            204: {"description": "Nothing left to send: Last-Event-ID is the last message."},
            400: {"description": "Last-Event-ID is not a whole number >= 0."},
            503: {"description": "This worker holds SSE_MAX_CLIENTS streams; see Retry-After."},
        },
    )
    async def events(
        last_event_id: Annotated[str | None, Header(include_in_schema=True)] = None,
    ) -> Response:
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

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "streams": len(hub.streams)}

    return app


app = create_app()
