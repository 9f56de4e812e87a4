"""A bare ASGI broadcast: the limit for the S3 fan-out scenario.

`GET /channels/{name}/events` subscribes with a bounded per-client queue;
`POST /channels/{name}/messages` with JSON `{"data": "..."}` encodes the frame once and
puts the same bytes on every subscriber's queue (a full queue drops that subscriber,
never blocks the publisher), then answers 201 `{"id": "n"}`.

Deliberately minimal: no history, no auth, and no disconnect watcher. uvicorn turns
`send` into a no-op once the client is gone, so a departed subscriber only costs a queue
slot until shutdown; that keeps this the lower bound of per-subscriber work.
"""

import asyncio
import json
import os

from .asgi import Receive, Scope, Send, lifespan, not_found, read_body, respond

QUEUE_SIZE = int(os.environ.get("SSE_SUBSCRIBER_QUEUE", "64"))
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
CLOSE = b""  # sentinel frame: end this subscriber's stream

channels: dict[str, set[asyncio.Queue[bytes]]] = {}
next_id = 0


def close_all() -> None:
    for subscribers in channels.values():
        for queue in subscribers:
            queue.put_nowait(CLOSE) if not queue.full() else None
    channels.clear()


async def subscribe(channel: str, send: Send) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
    subscribers = channels.setdefault(channel, set())
    subscribers.add(queue)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        # `: live` as the baked app says it: subscribed, so a publish from now reaches it
        # (the load generator starts publishing once every subscriber has said so).
        await send(
            {"type": "http.response.body", "body": b"retry: 3000\n\n: live\n\n", "more_body": True}
        )
        while (frame := await queue.get()) is not CLOSE:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        # Without a disconnect watcher, streams whose client left are still waiting here
        # when uvicorn's graceful-shutdown timeout cancels them: expected, not an error.
        pass
    finally:
        subscribers.discard(queue)


async def publish(channel: str, receive: Receive, send: Send) -> None:
    global next_id
    try:
        data = str(json.loads(await read_body(receive))["data"])
    except (ValueError, KeyError, TypeError):
        await respond(send, 422, b'{"detail":"expected {\\"data\\": ...}"}', b"application/json")
        return
    next_id += 1
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    frame = f"id: {next_id}\nevent: message\n{lines}\n".encode()
    for queue in list(channels.get(channel, ())):
        if queue.full():
            channels[channel].discard(queue)
        else:
            queue.put_nowait(frame)
    await respond(send, 201, b'{"id":"%d"}' % next_id, b"application/json")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send, on_shutdown=close_all)
        return
    if scope["type"] != "http":
        return
    parts = scope["path"].strip("/").split("/")
    if len(parts) == 3 and parts[0] == "channels":
        if parts[2] == "events" and scope["method"] == "GET":
            await subscribe(parts[1], send)
            return
        if parts[2] == "messages" and scope["method"] == "POST":
            await publish(parts[1], receive, send)
            return
    await not_found(send)
