"""The tutorial pattern: a sync generator with `time.sleep` inside a StreamingResponse.

Kept naive on purpose (sleep after each send, no absolute deadlines): Starlette runs
each `next()` of a sync generator in its ~40-thread pool, so every open stream competes
for those threads and thousands of clients starve.
"""

import os
import time
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

COUNT = int(os.environ.get("SSE_MESSAGE_COUNT", "5"))
INTERVAL = float(os.environ.get("SSE_MESSAGE_INTERVAL", "1.0"))

app = FastAPI()


def event_generator() -> Iterator[str]:
    yield "retry: 3000\n\n"
    for i in range(1, COUNT + 1):
        yield f"id: {i}\ndata: Message {i}\n\n"
        if i < COUNT:
            time.sleep(INTERVAL)
    yield "event: end\ndata: end\n\n"


@app.get("/events")
async def sse() -> StreamingResponse:
    return StreamingResponse(event_generator(), media_type="text/event-stream")
