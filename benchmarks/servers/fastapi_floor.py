"""The bare stream as a route of a FastAPI app with the grown app's CORSMiddleware.

No stream code of ours: what FastAPI's own layers (its telemetry check, error and
exception middleware, router) and a user's CORSMiddleware cost per stream, measured
beside `baked_grown`. The difference between the two is the baked stream's own cost.
"""

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import bare
from .asgi import Receive, Scope, Send

ORIGIN = "http://127.0.0.1"  # as in grown.py: what the load generator sends as its Origin


class BareStream:
    """An ASGI app, not a function, so the route calls it as it is (no request wrapper)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await bare.events(send)


app = FastAPI()
app.add_route("/events", BareStream())
app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_credentials=True)
