"""Who may read a channel: JWT bearer tokens signed with SSE_AUTH_SECRET (HS256).

Channels named `user.<sub>` are readable only with a token whose `sub` is `<sub>`;
channels named `private.<name>` only with a token whose `channels` claim grants them
(an exact name, or a prefix ending in `*`). Every other channel is public, and pays
nothing for this module but one prefix check.

`read_channel` is the FastAPI dependency the subscribe route declares (`ChannelReader`).
It is the piece to copy for a stream of your own: a dependency that raises
`HTTPException` 401 (no valid token) or 403 (a valid token that does not grant this),
and otherwise returns who is reading, until when; `until_expiry` ends the stream then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr

from .sse import encode_event
from .stream import EventStream, Source

USER_PREFIX = "user."
PRIVATE_PREFIX = "private."
PROTECTED_PREFIXES = (USER_PREFIX, PRIVATE_PREFIX)
#: The cookie a browser's token rides in (see demo_login.py).
COOKIE = "sse_token"
#: The query parameter for clients that can set neither a header nor a cookie. Query
#: strings end up in access logs, proxies' logs and browser history: short-lived only.
QUERY = "token"
#: The one algorithm accepted. Naming it (never reading it from the token) is what keeps
#: `alg: none` and every algorithm confusion out.
ALGORITHM = "HS256"
#: The close reason of a stream whose token expired.
EXPIRED = "expired"
#: The last event of a stream whose token expired. No id: the client resumes after the
#: last message it got, once it has a new token.
TOKEN_EXPIRED = encode_event(
    '{"detail":"the token has expired: get a new one and resume"}', event="token-expired"
)
#: Expiry times beyond this (year 9999) are as good as never, and stay a valid float.
FAR_FUTURE = 253_402_300_799.0
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Reader:
    """Who a token says is reading, and until when (seconds since the epoch)."""

    sub: str
    expires: float


class Unauthorized(Exception):
    """No token, or one that is not a valid token of this service: answered with 401."""


class Forbidden(Exception):
    """A valid token that does not grant the channel: answered with 403."""


def is_protected(channel: str) -> bool:
    return channel.startswith(PROTECTED_PREFIXES)


def grants(claims: dict[str, Any], channel: str) -> bool:
    """Whether verified claims let their holder read `channel` (a protected one)."""
    if channel.startswith(USER_PREFIX):
        return claims["sub"] == channel[len(USER_PREFIX) :]
    return any(matches(pattern, channel) for pattern in claims.get("channels", ()))


def matches(pattern: str, channel: str) -> bool:
    """`private.team-*` matches every channel starting `private.team-`; else exact."""
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return channel == pattern


def verify(token: str, secret: bytes) -> dict[str, Any]:
    """The claims of a token this service signed and that has not expired, else Unauthorized."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; get a new one") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    channels = claims.get("channels", [])
    # PyJWT checked that exp converts to a whole number in the future; it may still be
    # a string or a number too large for a float.
    claims["exp"] = float(min(int(claims["exp"]), FAR_FUTURE))
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise Unauthorized("invalid token: sub must be a non-empty string")
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise Unauthorized("invalid token: channels must be a list of channel names")
    return claims


def authorize(token: str | None, channel: str, secret: bytes | None) -> Reader:
    """Who may read the protected `channel` with `token`; Unauthorized or Forbidden if none."""
    if secret is None:
        raise Unauthorized(
            f"{channel} is a private channel, and this service has no SSE_AUTH_SECRET: "
            "set it to enable private channels"
        )
    if token is None:
        raise Unauthorized(
            f"{channel} is a private channel: send a token as Authorization: Bearer <token>, "
            f"in the {COOKIE} cookie, or as ?{QUERY}="
        )
    claims = verify(token, secret)
    if not grants(claims, channel):
        raise Forbidden(f"the token of {claims['sub']} does not grant {channel}")
    return Reader(sub=claims["sub"], expires=claims["exp"])


def token_of(request: Request) -> str | None:
    """The token a request carries: Authorization: Bearer, else the cookie, else the query.

    An Authorization header that is not `Bearer <token>` is refused, rather than falling
    back to a cookie the client may not know it still has.
    """
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send the token as Authorization: Bearer <token>")
        return token.strip()
    return request.cookies.get(COOKIE) or request.query_params.get(QUERY) or None


def reader_of(request: Request, channel: str) -> Reader | None:
    """Who reads `channel` with this request's token: None for a public channel, else
    HTTPException 401 or 403."""
    if not is_protected(channel):
        return None
    secret: SecretStr | None = request.app.state.settings.auth_secret
    key = secret.get_secret_value().encode() if secret is not None else None
    try:
        return authorize(token_of(request), channel, key)
    except Unauthorized as exc:
        raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None


async def read_channel(request: Request) -> Reader | None:
    """Who reads the route's `{channel}`: None for a public channel, else 401 or 403.

    Async, and reading the request itself: FastAPI runs a sync dependency in its
    threadpool, and declared Header/Cookie/Query parameters would be parsed on every
    connect, public channels included (a dependency that takes only the `Request` costs
    a stream route nothing more, see routing.py). The route declares and validates
    `channel`.
    """
    return reader_of(request, request.path_params["channel"])


async def read_channels(request: Request) -> list[Reader]:
    """Who reads every `?channel=` of a multi-channel stream: one reader per protected
    channel (all must be granted), none for public ones."""
    readers = (reader_of(request, channel) for channel in request.query_params.getlist("channel"))
    return [reader for reader in readers if reader is not None]


async def signed_in(request: Request) -> Reader:
    """Whoever a valid token of this service names, else 401: for a stream of one's own.

    The dependency for routes like `/me/notifications` (see the README's "Add your own
    stream"): every request must carry a token, and `Reader.sub` says whose data to send.
    """
    secret: SecretStr | None = request.app.state.settings.auth_secret
    try:
        if secret is None:
            raise Unauthorized("this service has no SSE_AUTH_SECRET: set it to sign tokens")
        token = token_of(request)
        if token is None:
            raise Unauthorized("send a token as Authorization: Bearer <token>")
        claims = verify(token, secret.get_secret_value().encode())
    except Unauthorized as exc:
        raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
    return Reader(sub=claims["sub"], expires=claims["exp"])


#: The reader of a channel stream, as a route's parameter: `reader: ChannelReader`.
ChannelReader = Annotated[Reader | None, Depends(read_channel)]
#: The readers of a multi-channel stream's protected channels.
ChannelsReaders = Annotated[list[Reader], Depends(read_channels)]


def until_expiry(source: Source, expires: float) -> Source:
    """`source`, ended when the token expires with a `token-expired` event.

    One timer per stream (no task): at expiry it closes the stream, which stops the
    response pulling from `source` whatever it awaits, and the event is written last.
    """

    async def expiring(stream: EventStream) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        at = loop.time() + (expires - time.time())
        timer = loop.call_at(at, stream.close, EXPIRED, TOKEN_EXPIRED)
        try:
            async with aclosing(source(stream)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            timer.cancel()

    return expiring


def mint(secret: bytes, sub: str, *, ttl: float, now: float, channels: Sequence[str] = ()) -> str:
    """A token for `sub`, valid for `ttl` seconds from `now`, granting `channels` too."""
    claims: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": int(now + ttl)}
    if channels:
        claims["channels"] = list(channels)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
