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


def test_a_control_character_in_a_header_gets_400(running: RunningServer):
    # The HTTP parser refuses it before the app sees it.
    answer = _raw(running, b"GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 1\x01\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_request_that_is_not_http_gets_400(running: RunningServer):
    assert _raw(running, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")


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
