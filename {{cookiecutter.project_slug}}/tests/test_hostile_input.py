"""Hostile requests get the documented 4xx, never a 5xx or a stream."""

from __future__ import annotations

import socket

import httpx
import pytest

from conftest import RunningServer


@pytest.fixture
def running(serve) -> RunningServer:
    return serve(message_count=2, message_interval=0)


def _raw(running: RunningServer, request: bytes) -> bytes:
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(4096)


@pytest.mark.parametrize(
    "value",
    [b"9" * 10_000, b"x" * 100_000, b"\xff\xfe", "١٢".encode(), b"1 2", b"-0", b"+1"],
    ids=["10k-digits", "100k-garbage", "not-utf8", "arabic-digits", "space", "minus", "plus"],
)
def test_garbage_last_event_id_gets_400_with_a_reason(running: RunningServer, value: bytes):
    request = b"GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: " + value + b"\r\n\r\n"
    answer = _raw(running, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Last-Event-ID must be a whole number" in answer


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/events?last_event_id=1%01", b"Last-Event-ID must be a whole number"),
        ("/channels/c/events?last_event_id=1-1%01", b"Last-Event-ID"),
    ],
)
def test_a_control_character_in_the_resume_id_gets_400(
    running: RunningServer, path: str, reason: bytes
):
    # Percent-encoded, it passes the HTTP parser and reaches the stream's own check.
    answer = _raw(running, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert reason in answer


@pytest.mark.parametrize(
    "body",
    [b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"Content-Length: 1000\r\n\r\nhello"],
    ids=["chunked", "content-length"],
)
def test_a_stream_request_whose_body_never_ends_streams_at_once(
    running: RunningServer, body: bytes
):
    """A GET has no use for a body: the stream does not wait for one that never ends (it
    would hold the stream, and the server's shutdown, for as long as the client likes)."""
    answer = _raw(running, b"GET /events HTTP/1.1\r\nHost: t\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200 ")


# "%2e%2e": httpx would resolve a literal "/static/../" before sending it.
@pytest.mark.parametrize("path", ["/nope", "/events/x", "/static/%2e%2e/main.py", "/%00"])
def test_unknown_paths_get_404(running: RunningServer, path: str):
    response = httpx.get(running.url + path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        *(("POST", "/events"), ("PUT", "/events"), ("DELETE", "/events"), ("HEAD", "/events")),
        *(("POST", "/healthz"), ("PATCH", "/")),
    ],
)
def test_wrong_methods_get_405(running: RunningServer, method: str, path: str):
    response = httpx.request(method, running.url + path)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
