"""POST /demo/login: a token for anyone, so the page can show a private channel working.

A demo, never a login: it believes whatever name it is sent. Enabled only by
SSE_DEMO_LOGIN=true; replace it with your own login, which sets the same cookie (or hands
out the same token) once it knows who the user is.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .auth import COOKIE, USER_PREFIX, mint
from .settings import Settings

# `user.<name>` must be a valid channel name (see channels.py): 64 characters in all.
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,59}$"


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Who to be; reads user.<name>.")


class LoggedIn(BaseModel):
    channel: str
    expires: int = Field(description="When the token expires, in seconds since the epoch.")


def add_demo_login(app: FastAPI, settings: Settings) -> None:
    assert settings.auth_secret is not None  # the settings refuse the demo without it
    secret = settings.auth_secret.get_secret_value().encode()
    ttl = settings.demo_token_ttl

    @app.post("/demo/login", tags=["demo"], response_model=LoggedIn)
    async def demo_login(login: Login, request: Request) -> Response:
        """Set the `sse_token` cookie: a token for `user.<name>`, for SSE_DEMO_TOKEN_TTL s."""
        now = time.time()
        token = mint(secret, login.name, ttl=ttl, now=now)
        response = JSONResponse(
            {"channel": USER_PREFIX + login.name, "expires": int(now + ttl)},
            headers={"Cache-Control": "no-store"},
        )
        # HttpOnly: no script on the page can read it. SameSite=Strict: no other site's
        # page can make the browser send it. Only the channel streams need it.
        response.set_cookie(
            COOKIE,
            token,
            max_age=ttl,
            path="/channels/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
