"""Log lines for connect, resume, the end of a stream, drops and shutdown, at their levels."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import httpx
import pytest

from {{ cookiecutter.project_slug }}.hub import StreamHub
from {{ cookiecutter.project_slug }}.logs import formatter, value

from sse_client import new_channel, publish, wait_for

PACKAGE = "{{ cookiecutter.project_slug }}"


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith(PACKAGE) and record.getMessage().startswith(f"event={event} ")
    ]


def read_all(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> None:
    with client.stream("GET", url + "/events", headers=headers or {}) as response:
        assert response.status_code == 200
        response.read()


def test_connect_and_normal_end_are_debug_lines(serve, client, caplog):
    running = serve(message_count=2, message_interval=0, log_level="debug")
    read_all(client, running.url)
    assert wait_for(lambda: lines(caplog, "close"))
    [connect] = lines(caplog, "connect")
    assert connect.levelno == logging.DEBUG
    assert connect.name == f"{PACKAGE}.stream"
    assert "client=127.0.0.1:" in connect.getMessage()
    assert "path=/events" in connect.getMessage()
    [close] = lines(caplog, "close")
    assert close.levelno == logging.DEBUG
    assert "reason=done" in close.getMessage()


def test_resume_names_the_last_event_id(serve, client, caplog):
    running = serve(message_count=3, message_interval=0, log_level="debug")
    read_all(client, running.url, headers={"Last-Event-ID": "1"})
    [resume] = lines(caplog, "resume")
    assert resume.levelno == logging.DEBUG
    assert resume.getMessage().endswith("last_event_id=1")
    assert not lines(caplog, "connect")


def test_resume_by_query_parameter_is_logged_too(serve, client, caplog):
    running = serve(log_level="debug")
    channel = new_channel()
    last = publish(client, running.url, channel, "one")
    url = f"{running.url}/channels/{channel}/events?last_event_id={last}"
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        next(response.iter_lines())
    [resume] = lines(caplog, "resume")
    assert resume.getMessage().endswith(f"last_event_id={last}")


def test_a_resume_point_in_any_script_is_logged_and_the_stream_served(serve, client, caplog):
    running = serve(message_count=3, message_interval=0, log_level="debug")
    # U+2003 (an em space) is stripped like any space, but is not Latin-1.
    with client.stream("GET", running.url + "/events?last_event_id=2%E2%80%83") as response:
        assert response.status_code == 200
        assert "data: Message 3" in response.read().decode()
    [resume] = lines(caplog, "resume")
    assert "last_event_id=" in resume.getMessage()
    assert wait_for(lambda: client.get(running.url + "/healthz").json()["streams"] == 0)


def test_at_info_level_a_stream_logs_nothing(serve, client, caplog):
    running = serve(message_count=2, message_interval=0)
    read_all(client, running.url)
    read_all(client, running.url, headers={"Last-Event-ID": "1"})
    assert [r for r in caplog.records if r.name.startswith(PACKAGE + ".stream")] == []


def test_a_client_dropped_for_slowness_is_a_warning(serve, client, caplog):
    running = serve(subscriber_queue=2, send_timeout=0.5, heartbeat_interval=0.5, history_size=5)
    channel = new_channel()
    # A client that subscribes and then never reads, with a tiny receive buffer.
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", int(running.url.rsplit(":", 1)[1])))
    reader.sendall(f"GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        assert reader.recv(1024).startswith(b"HTTP/1.1 200")
        big = "x" * 60_000
        deadline = time.monotonic() + 20
        while not lines(caplog, "drop") and time.monotonic() < deadline:
            publish(client, running.url, channel, big)
    finally:
        reader.close()
    [drop] = lines(caplog, "drop")
    assert drop.levelno == logging.WARNING
    assert f"path=/channels/{channel}/events" in drop.getMessage()
    assert "reason=slow" in drop.getMessage() or "reason=stalled" in drop.getMessage()


def test_shutdown_is_one_info_line_with_the_count(caplog):
    async def run() -> None:
        hub = StreamHub(heartbeat_interval=15)

        async def receive() -> dict[str, object]:
            await asyncio.Event().wait()
            return {}

        for _ in range(3):
            hub.open(receive)
        hub.close_all()
        hub.close_all()  # the signal and the end of the lifespan both call it

    with caplog.at_level(logging.INFO, logger=PACKAGE):
        asyncio.run(run())
    [shutdown] = lines(caplog, "shutdown")
    assert shutdown.levelno == logging.INFO
    assert shutdown.getMessage() == "event=shutdown streams=3"


@pytest.mark.parametrize(
    ("raw", "logged"),
    [("plain", "plain"), ("two words", '"two words"'), ("", '""'), ('a"b', '"a\\"b"'),
     ("x=1", '"x=1"'), ("line\nbreak", '"line\\nbreak"')],
)  # fmt: skip
def test_values_stay_one_logfmt_token(raw: str, logged: str):
    assert value(raw) == logged


def test_a_formatted_line_is_all_key_value_pairs():
    record = logging.LogRecord(
        f"{PACKAGE}.stream", logging.WARNING, __file__, 1,
        "event=drop reason=%s path=%s", ("slow", value("/a b")), None,
    )  # fmt: skip
    line = formatter().format(record)
    pair = r'[a-z_]+=(?:"(?:[^"\\]|\\.)*"|[^ "]+)'
    assert re.fullmatch(rf"{pair}(?: {pair})*", line), line
    assert re.match(r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=WARNING ", line)
    assert line.endswith(' event=drop reason=slow path="/a b"')
