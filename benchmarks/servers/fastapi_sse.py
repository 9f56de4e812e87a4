"""FastAPI's native SSE: `response_class=EventSourceResponse` on a generator path operation."""

import asyncio
import os
from collections.abc import AsyncIterable

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

COUNT = int(os.environ.get("SSE_MESSAGE_COUNT", "5"))
INTERVAL = float(os.environ.get("SSE_MESSAGE_INTERVAL", "1.0"))

app = FastAPI()


@app.get("/events", response_class=EventSourceResponse)
async def events() -> AsyncIterable[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    yield ServerSentEvent(comment="stream", retry=3000)
    for i in range(1, COUNT + 1):
        # Absolute deadlines, like the baked app, so only the framework differs.
        delay = start + (i - 1) * INTERVAL - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield ServerSentEvent(raw_data=f"Message {i}", id=str(i))
    yield ServerSentEvent(raw_data="end", event="end")
