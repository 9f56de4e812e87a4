"""Broadcast channels: subscribe with replay by Last-Event-ID, publish with limits and auth."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from functools import partial
from typing import Annotated

from fastapi import Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .auth import ChannelReader, ChannelsReaders, until_expiry
from .broker import BadEventId, Broker, BrokerUnavailable, parse_id
from .broker.cursor import MAX_CHANNELS as MAX_STREAM_CHANNELS
from .broker.cursor import Cursor, format_part, parse_cursor
from .broker.messages import Key, format_id
from .demo import DEMO, Counter
from .hub import StreamHub
from .routing import StreamingFastAPI, resume_point
from .settings import Settings
from .sse import encode_comment
from .stream import EventStream, EventStreamResponse, Source

CHANNEL_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_CHANNEL = re.compile(CHANNEL_PATTERN)
EVENT_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A JSON string may spell one byte of text as a 6-character escape (\u0001); anything
# longer than that can only be over the limit, so it is refused before it is parsed.
JSON_OVERHEAD = 6
RETRY_AFTER = "2"
#: Event types a stream of several channels sends itself (`reset`, `token-expired`), or
#: that a client acts on (`end`, see static/sse-client.js): no channel there may be named so.
TYPED_BY_THE_STREAM = frozenset({"reset", "token-expired", "end"})
LIVE = encode_comment("live")
BROKER_AWAY = encode_comment("the message broker is unreachable; retrying")

ChannelName = Annotated[
    str, Path(pattern=CHANNEL_PATTERN, description="Letters, digits, `_`, `.`, `-`; 1-64.")
]
#: Where a subscription resumes: an id this service issued, `<number>-<number>`.
MessageId = resume_point(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")
#: Where a multi-channel subscription resumes: a cursor (see broker/cursor.py).
CursorId = resume_point(pattern=r"^[0-9a-z]{1,13}-[0-9a-z]{1,13}(,[0-9a-z]{1,13}-[0-9a-z]{1,13})*$")
ChannelNames = Annotated[
    list[str],
    Query(
        alias="channel",
        description=f"The channels, 1 to {MAX_STREAM_CHANNELS}, each named once: "
        "`?channel=a&channel=b`. Letters, digits, `_`, `.`, `-`; 1-64 each.",
    ),
]

DemoFlag = Annotated[
    bool,
    Query(
        description="Also carry the demo counter (what `GET /events` sends): events typed "
        "`demo` (`Message 1`.. every SSE_MESSAGE_INTERVAL s), then one `demo:end`; its "
        "position is the cursor's last part."
    ),
]


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="The message; any text, line breaks kept.")
    event: str = Field(
        default="message",
        description="Event name: one line of 1-64 characters, no control characters.",
    )

    @field_validator("event")
    @classmethod
    def _one_short_line(cls, value: str) -> str:
        if not 1 <= len(value) <= EVENT_MAX or _CONTROL.search(value):
            raise ValueError(f"event must be 1-{EVENT_MAX} characters without line breaks")
        return value


class Published(BaseModel):
    id: str


class Problem(BaseModel):
    detail: str


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def follow(
    stream: EventStream, *, broker: Broker, channel: str, after: str | None
) -> AsyncIterator[bytes]:
    """History after `after` (if given), then live messages, until the stream closes."""
    subscription = broker.subscribe(channel, stream)
    try:
        # The last chunk of the catch-up is held back to be written with the `live` mark.
        last = b""
        try:
            async with aclosing(broker.catch_up(subscription, after)) as chunks:
                async for chunk in chunks:
                    if last:
                        yield last
                    last = chunk
        except BrokerUnavailable:
            return  # the client reconnects, and resumes once the broker is back
        if stream.closed:  # dropped while catching up: not live, so do not say so
            return
        # The comment marks the moment the stream is live: a client that publishes after
        # seeing it knows the message will reach it.
        yield last + LIVE
        while not stream.closed:
            await stream.wait()
            if stream.pending:
                yield stream.take()
    finally:
        broker.unsubscribe(subscription)


async def follow_channels(
    stream: EventStream,
    *,
    broker: Broker,
    channels: Sequence[str],
    after: Sequence[Key] | None,
    demo: Counter | None = None,
) -> AsyncIterator[bytes]:
    """Several channels on one stream, each as `follow` would send it, with one resume id.

    `after` holds the position on each channel (a parsed cursor, see broker/cursor.py).
    The channels catch up one after another; those caught up are live meanwhile. Every
    write puts what is queued first: the cursor of each event then covers exactly what
    was written before it, so a resume from any of them misses and repeats nothing.
    With `demo`, the demo counter rides along once every channel is live, its position
    the cursor's last part.
    """
    cursor = Cursor(channels, after or [(0, 0)] * len(channels))
    if demo is not None:
        cursor.parts.append(format_part((0, demo.number)))
    subscriptions = [
        broker.subscribe(channel, stream, cursor, index) for index, channel in enumerate(channels)
    ]
    try:
        try:
            if after is None:
                # Where each channel stands now, before any goes live: every cursor the
                # stream sends names a real position on every channel.
                after = [parse_id(await broker.ready(channel)) for channel in channels]
                for index, key in enumerate(after):
                    cursor.advance(index, key)
            for index, subscription in enumerate(subscriptions):
                since = format_id(after[index])
                async with aclosing(broker.catch_up(subscription, since)) as chunks:
                    async for chunk in chunks:
                        yield stream.take() + chunk if stream.pending else chunk
        except BrokerUnavailable:
            return
        if stream.closed:
            return
        yield stream.take() + LIVE
        clock = asyncio.get_running_loop().time
        while not stream.closed:
            deadline = demo.deadline(clock()) if demo is not None else None
            await stream.wait(deadline)
            chunk = stream.take() if stream.pending else b""
            if demo is not None and not stream.closed:
                chunk += demo.take_due(clock(), cursor, len(channels))
            if chunk:
                yield chunk
    finally:
        for subscription in subscriptions:
            broker.unsubscribe(subscription)


def parse_channels(
    channels: Sequence[str], last_event_id: str | None, *, demo: bool = False
) -> list[Key] | None:
    """Check a multi-channel request: its channels, and its resume cursor if any.

    With `demo`, the cursor has one more part, the demo counter's (the last).
    Raises ValueError (BadEventId for the cursor) with a reason a 400 can carry.
    """
    if not 1 <= len(channels) <= MAX_STREAM_CHANNELS:
        raise ValueError(f"name 1 to {MAX_STREAM_CHANNELS} channels, as ?channel=a&channel=b")
    if len(set(channels)) != len(channels):
        raise ValueError("each channel may be named only once")
    for channel in channels:
        if not _CHANNEL.match(channel):
            raise ValueError("channel must be 1-64 letters, digits, '_', '.' or '-'")
    # A channel's messages are typed by its name, so not by one the stream's own use.
    reserved = TYPED_BY_THE_STREAM | {DEMO} if demo else TYPED_BY_THE_STREAM
    taken = sorted(reserved.intersection(channels))
    if taken:
        raise ValueError(
            f"no channel may be named {taken[0]} on this stream: the stream's own "
            f"{taken[0]} events are typed so"
        )
    if last_event_id is None:
        return None
    return parse_cursor(last_event_id.strip(), len(channels) + demo)


async def unavailable(stream: EventStream) -> AsyncIterator[bytes]:
    """A stream that only says why it ends: `retry` is written with it, then it ends.

    Not a 503: a spec EventSource gives up for good on any error status, while a stream
    that ends is retried after `retry` ms, and resumed by Last-Event-ID.
    """
    yield BROKER_AWAY


def add_channel_routes(
    app: StreamingFastAPI, hub: StreamHub, broker: Broker, settings: Settings
) -> None:
    token = settings.publish_token.get_secret_value().encode() if settings.publish_token else None
    max_body = settings.max_message_bytes * JSON_OVERHEAD + 1024

    @app.stream(
        "/channels/{channel}/events",
        tags=["channels"],
        response_class=EventStreamResponse,
        responses={
            200: {
                "description": "Replay after Last-Event-ID (or a `reset` event), then live. "
                "While the broker is unreachable: `retry` and a comment, then the stream ends "
                "(an EventSource retries)."
            },
            400: {"model": Problem, "description": "Last-Event-ID is not an id of this API."},
            401: {
                "model": Problem,
                "description": "A `user.*` or `private.*` channel, and no valid token "
                "(Authorization: Bearer, the `sse_token` cookie, or `?token=`).",
            },
            403: {"model": Problem, "description": "The token does not grant this channel."},
            422: {"model": Problem, "description": "The channel name is not allowed."},
        },
    )
    async def subscribe(
        channel: ChannelName,
        reader: ChannelReader,
        last_event_id: MessageId = None,
    ) -> Response:
        """Every message published to the channel from now on.

        With `Last-Event-ID`, first every message after that id still in the channel's
        history; if the id is too old or unknown, a `reset` event says so instead, and
        carries the newest id.

        `user.<name>` channels need a token of `<name>`, `private.*` ones a token whose
        `channels` grant them; such a stream ends with a `token-expired` event when its
        token does.
        """
        after = last_event_id
        if after is not None:
            after = after.strip()
            try:
                parse_id(after)
            except BadEventId as exc:
                return problem(400, str(exc))
        if not broker.available:
            return EventStreamResponse(hub, unavailable, retry_ms=settings.retry_ms)
        source: Source = partial(follow, broker=broker, channel=channel, after=after)
        if reader is not None:
            source = until_expiry(source, reader.expires)
        return EventStreamResponse(hub, source, retry_ms=settings.retry_ms)

    @app.stream(
        "/channels/events",
        tags=["channels"],
        response_class=EventStreamResponse,
        responses={
            200: {
                "description": "Each channel's replay after its position in the cursor, then "
                "live, on one stream. Events are typed `<channel>` (or `<channel>:<event>`); "
                "each id is a cursor covering every channel."
            },
            400: {
                "model": Problem,
                "description": "Channels missing, repeated, badly named or too many; or "
                "Last-Event-ID is not a cursor of this stream.",
            },
            401: {"model": Problem, "description": "A protected channel, and no valid token."},
            403: {"model": Problem, "description": "The token does not grant every channel."},
        },
    )
    async def subscribe_many(
        channels: ChannelNames,
        readers: ChannelsReaders,
        last_event_id: CursorId = None,
        demo: DemoFlag = False,
    ) -> Response:
        """Several channels on one stream: what a page needs, on one connection.

        The guarantees of a single channel hold for each: every message once, in order,
        and a resume from the last id (a cursor) misses and repeats nothing on any of them.
        With `demo=true` the demo counter rides along (the page's stream), resumed the same way.
        """
        try:
            after = parse_channels(channels, last_event_id, demo=demo)
        except ValueError as exc:
            return problem(400, str(exc))
        counter = None
        if demo:
            counter = Counter(
                after=after.pop()[1] if after else 0,
                count=settings.message_count,
                interval=settings.message_interval,
            )
        if not broker.available:
            return EventStreamResponse(hub, unavailable, retry_ms=settings.retry_ms)
        source: Source = partial(
            follow_channels, broker=broker, channels=channels, after=after, demo=counter
        )
        if readers:
            source = until_expiry(source, min(reader.expires for reader in readers))
        return EventStreamResponse(hub, source, retry_ms=settings.retry_ms)

    @app.post(
        "/channels/{channel}/messages",
        tags=["channels"],
        status_code=201,
        response_model=Published,
        responses={
            401: {"model": Problem, "description": "A publish token is set; none was sent."},
            403: {"model": Problem, "description": "The token sent is not the publish token."},
            413: {"model": Problem, "description": "`data` is over SSE_MAX_MESSAGE_BYTES."},
            415: {"model": Problem, "description": "The body is not application/json."},
            503: {"model": Problem, "description": "The broker could not store it; retry."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PublishRequest.model_json_schema()}},
            }
        },
    )
    async def publish(
        channel: ChannelName,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Store a message in the channel and send it to every subscriber.

        `201` means the broker has stored it: from then on it is in the history.
        """
        if token is not None:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not given:
                return problem(
                    401,
                    "publishing needs Authorization: Bearer <token>",
                    {"WWW-Authenticate": "Bearer"},
                )
            if not secrets.compare_digest(given.strip().encode(), token):
                return problem(403, "wrong publish token")
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return problem(415, "send the message as application/json")
        body = await read_body(request, max_body)
        if body is None:
            return problem(413, f"the body is over {max_body} bytes")
        try:
            message = PublishRequest.model_validate_json(body)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False))
            raise RequestValidationError(
                [{**error, "loc": ["body", *error["loc"]]} for error in errors]
            ) from None
        try:
            size = len(message.data.encode())
        except UnicodeEncodeError:  # a lone surrogate escape, e.g. "\ud800"
            return problem(422, "data must be valid Unicode text")
        if size > settings.max_message_bytes:
            return problem(413, f"data is {size} bytes; the limit is {settings.max_message_bytes}")
        started = time.perf_counter()
        try:
            message_id = await broker.publish(channel, message.event, message.data)
        except BrokerUnavailable as exc:
            return problem(503, str(exc), {"Retry-After": RETRY_AFTER})
        hub.metrics.published(time.perf_counter() - started)
        return JSONResponse({"id": message_id}, status_code=201)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is longer than `limit` (never all of it)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
