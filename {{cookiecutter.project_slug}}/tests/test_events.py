"""GET /events: the demo stream, read by a real HTTP client from a real server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from starlette.types import Message, Receive, Scope, Send
from uvicorn_process import RawClient, raise_open_file_limit

from {{ cookiecutter.project_slug }}.main import create_app
from {{ cookiecutter.project_slug }}.settings import Settings

import conftest
from conftest import RunningServer


def read_stream(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None, path: str = "/events"
) -> list[tuple[float, ServerSentEvent]]:
    """Every event until the stream ends, with its arrival time relative to connecting."""
    started = time.monotonic()
    with connect_sse(client, "GET", url + path, headers=dict(headers or {})) as source:
        source.response.raise_for_status()
        return [
            (time.monotonic() - started, event)
            for event in source.iter_sse()
            # httpx-sse reports the retry-only block too; by the spec it dispatches nothing.
            if event.data or event.event != "message"
        ]


def messages(received: list[tuple[float, ServerSentEvent]]) -> list[ServerSentEvent]:
    return [event for _, event in received if event.event == "message"]


def test_sends_count_messages_in_order_with_ids(server: RunningServer, client: httpx.Client):
    got = messages(read_stream(client, server.url))
    assert [event.data for event in got] == ["Message 1", "Message 2", "Message 3"]
    assert [event.id for event in got] == ["1", "2", "3"]


def test_starts_with_the_retry_delay(serve, client: httpx.Client):
    running = serve(message_count=1, retry_ms=1234, retry_jitter=0)
    with client.stream("GET", running.url + "/events") as response:
        first_line = next(response.iter_lines())
    assert first_line == "retry: 1234"


def test_first_message_at_once_then_one_per_interval(serve, client: httpx.Client):
    interval = 0.3
    running = serve(message_count=4, message_interval=interval)
    arrivals = [at for at, event in read_stream(client, running.url) if event.event == "message"]
    assert arrivals[0] < interval / 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(interval * 0.5 <= gap <= interval * 1.5 for gap in gaps), gaps


def test_ends_with_an_end_event_and_closes(server: RunningServer, client: httpx.Client):
    received = read_stream(client, server.url)  # returns only once the server closed
    assert received[-1][1].event == "end"
    assert [event.event for _, event in received].count("end") == 1


def test_resumes_after_last_event_id(serve, client: httpx.Client):
    running = serve(message_count=5, message_interval=0.5)
    received = read_stream(client, running.url, headers={"Last-Event-ID": "2"})
    got = messages(received)
    assert [event.id for event in got] == ["3", "4", "5"]
    assert received[0][0] < 0.25, "the next message must come at once, not after an interval"


@pytest.mark.parametrize("last", ["3", "4", "99999999999999999999"])
def test_nothing_left_gets_204(server: RunningServer, client: httpx.Client, last: str):
    response = client.get(server.url + "/events", headers={"Last-Event-ID": last})
    assert response.status_code == 204
    assert response.content == b""


# b"\xb2" is "²" as the server reads a header (Latin-1): a digit to str.isdigit().
@pytest.mark.parametrize(
    "bad", [b"-1", b"abc", b"1.5", b"0x10", b"1" * 21, "²".encode(), b"\xb2", b""]
)
def test_bad_last_event_id_gets_400_with_a_reason(
    server: RunningServer, client: httpx.Client, bad: bytes
):
    response = client.get(server.url + "/events", headers={"Last-Event-ID": bad})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


def test_heartbeat_comments_fill_silence(serve, client: httpx.Client):
    running = serve(message_count=2, message_interval=2.0, heartbeat_interval=0.4)
    arrivals: list[float] = []
    with client.stream("GET", running.url + "/events") as response:
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # 2 s of silence with a 0.4 s heartbeat: no gap much longer than the interval (the
    # promise), with room for a slow machine; at most it is 0.4 s by design.
    assert len(arrivals) >= 6, arrivals
    assert max(gaps) < 0.4 * 1.75, gaps


def test_no_heartbeat_when_messages_are_frequent(serve, client: httpx.Client):
    # Long enough for several of the hub's timer ticks (every half interval, 0.2 s).
    running = serve(message_count=20, message_interval=0.1, heartbeat_interval=0.4)
    with client.stream("GET", running.url + "/events") as response:
        lines = list(response.iter_lines())
    assert not [line for line in lines if line.startswith(":")]


def test_stream_headers(server: RunningServer, client: httpx.Client):
    with client.stream("GET", server.url + "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"


def test_a_client_that_leaves_is_forgotten(serve, client: httpx.Client):
    running = serve(message_count=100, message_interval=0.2)
    with client.stream("GET", running.url + "/events") as response:
        lines = response.iter_lines()  # keep it: a dropped line iterator closes the response
        assert next(lines).startswith("retry: ")
        assert client.get(running.url + "/healthz").json()["streams"] == 1
    deadline = time.monotonic() + 2  # the server notices within one interval; allow ten
    while client.get(running.url + "/healthz").json()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(running.url + "/healthz").json()["streams"] == 0


def test_many_clients_stream_at_once(serve):
    """Streams never block each other: 200 clients finish in about one stream's time.

    A stream that holds a thread while it waits (the tutorial's sync generator with
    `time.sleep`) takes one of the ~40 threads of Starlette's pool for its whole
    length: 200 of them take five lengths, and a real crowd never finishes.
    """
    clients, count, interval = 200, 3, 1.0
    raise_open_file_limit(2 * clients + 200)  # both ends of each connection are here
    running = serve(message_count=count, message_interval=interval)
    port = int(running.url.rsplit(":", 1)[1])
    readers = [RawClient(port) for _ in range(clients)]

    async def read_all() -> None:
        await asyncio.wait_for(asyncio.gather(*(reader.run() for reader in readers)), 30)

    started = time.monotonic()
    asyncio.run(read_all())
    took = time.monotonic() - started
    assert all(reader.ids() == [1, 2, 3] for reader in readers)
    # One stream takes 2 s (its first message at once); in turn they would take 400 s.
    assert took < 2 * (count - 1) * interval, f"{clients} streams took {took:.1f} s"


def test_resumes_after_last_event_id_in_the_query(serve, client: httpx.Client):
    """For a new EventSource, which cannot set headers (the page's retry after a refusal)."""
    running = serve(message_count=4, message_interval=0.1)
    got = messages(read_stream(client, running.url, path="/events?last_event_id=2"))
    assert [event.id for event in got] == ["3", "4"]


def test_the_header_wins_over_the_query(serve, client: httpx.Client):
    running = serve(message_count=4, message_interval=0.1)
    headers = {"Last-Event-ID": "3"}
    got = messages(read_stream(client, running.url, headers, path="/events?last_event_id=1"))
    assert [event.id for event in got] == ["4"]


@pytest.mark.parametrize("bad", ["x", "%C2%B2", "%D9%A1%D9%A2"])  # "x", "²", Arabic "12"
def test_a_bad_query_resume_point_gets_400(server: RunningServer, client: httpx.Client, bad: str):
    response = client.get(server.url + "/events?last_event_id=" + bad)
    assert response.status_code == 400


def _behind_middleware_that_wraps_receive(settings: Settings) -> Callable[..., Awaitable[None]]:
    """The app as some ASGI middleware passes it on: with a `receive` of its own."""
    app = create_app(settings)

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def own_receive() -> Message:
            return await receive()

        await app(scope, own_receive, send)

    return wrapped


def test_streams_work_where_the_connection_is_hidden(
    serve, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    """Without uvicorn's transport in sight, streams wait in receive() instead."""
    monkeypatch.setattr(conftest, "create_app", _behind_middleware_that_wraps_receive)
    running = serve(message_count=3, message_interval=0.4, heartbeat_interval=0.1)
    with client.stream("GET", running.url + "/events") as response:
        lines = list(response.iter_lines())
    assert [line for line in lines if line.startswith("data: Message")] == [
        f"data: Message {n}" for n in (1, 2, 3)
    ]
    assert [line for line in lines if line.startswith(":")], "heartbeats wake it too"

    endless = serve(message_count=100_000, message_interval=0.2)
    with client.stream("GET", endless.url + "/events") as response:
        lines = response.iter_lines()  # keep it: a dropped line iterator closes the response
        assert next(lines).startswith("retry:")
        assert client.get(endless.url + "/healthz").json()["streams"] == 1
    deadline = time.monotonic() + 2
    while client.get(endless.url + "/healthz").json()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(endless.url + "/healthz").json()["streams"] == 0


def _under_a_root_path(settings: Settings) -> Callable[..., Awaitable[None]]:
    """The app as `uvicorn --root-path /api` calls it: the root path in front of `path`."""
    app = create_app(settings)

    async def rooted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "root_path": "/api", "path": "/api" + scope["path"]}
        await app(scope, receive, send)

    return rooted


def test_stream_routes_behave_the_same_under_a_root_path(
    serve, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(conftest, "create_app", _under_a_root_path)
    running = serve(message_count=3, message_interval=0)
    # The stream route's own answer (400 with a reason), not FastAPI's validation (422).
    response = client.get(running.url + "/events?last_event_id=x")
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]
    received = read_stream(client, running.url, path="/events?last_event_id=1")
    assert [event.data for event in messages(received)] == ["Message 2", "Message 3"]
