"""A start-up refused for a known reason is one line in the server's log, not a traceback.

When the lifespan start-up raises, Starlette tells the server `lifespan.startup.failed`
with the whole traceback as the message, and uvicorn logs it: a wall of frames around
the one line that matters ("Cannot start: cannot reach Redis at ..."). For the reasons
the app knows (`StartupRefused`), the message is that line alone; the server still
exits with its failure status (uvicorn: 3), and anything unexpected keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StartupRefused(Exception):
    """The app will not start; the message says why, in one line, for the operator."""


class ExplainRefusedStartup:
    """Pure ASGI middleware: it touches the lifespan only, never a request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_reason(message: Message) -> None:
            # Starlette sends this from the `except` block that caught the exception.
            refused = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(refused, StartupRefused):
                message = {"type": message["type"], "message": str(refused)}
            await send(message)

        # Reported: the server knows the start-up failed, and why.
        with contextlib.suppress(StartupRefused):
            await self.app(scope, receive, send_reason)
