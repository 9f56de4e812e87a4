"""sse-starlette's `EventSourceResponse` returned from a FastAPI route (its documented use).

The file is not named `sse_starlette.py` so it cannot shadow the library it measures.
"""

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sse_starlette import EventSourceResponse, ServerSentEvent

COUNT = int(os.environ.get("SSE_MESSAGE_COUNT", "5"))
INTERVAL = float(os.environ.get("SSE_MESSAGE_INTERVAL", "1.0"))

app = FastAPI()


async def event_stream() -> AsyncIterator[ServerSentEvent]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(1, COUNT + 1):
        delay = start + (i - 1) * INTERVAL - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield ServerSentEvent(data=f"Message {i}", id=str(i), retry=3000 if i == 1 else None)
    yield ServerSentEvent(data="end", event="end")


@app.get("/events")
async def events() -> EventSourceResponse:
    return EventSourceResponse(event_stream())
