"""A bare ASGI callable: the Python limit for `/events` on one uvicorn worker.

No framework, no extra task or memory stream per client: one coroutine per connection
that writes pre-encoded frames straight to `send` on absolute deadlines.
"""

import asyncio
import contextlib
import os

from .asgi import Receive, Scope, Send, lifespan, not_found

COUNT = int(os.environ.get("SSE_MESSAGE_COUNT", "5"))
INTERVAL = float(os.environ.get("SSE_MESSAGE_INTERVAL", "1.0"))

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
RETRY = b"retry: 3000\n\n"
END = b"event: end\ndata: end\n\n"


async def events(send: Send) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RETRY, "more_body": True})
    for i in range(1, COUNT + 1):
        delay = start + (i - 1) * INTERVAL - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = b"id: %d\ndata: Message %d\n\n" % (i, i)
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": END, "more_body": False})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] == "/events":
        # A stream still sleeping when uvicorn's graceful-shutdown timeout cancels it
        # (S2 holds them for an hour) is expected at shutdown, not an error.
        with contextlib.suppress(asyncio.CancelledError):
            await events(send)
    elif scope["type"] == "http":
        await not_found(send)
