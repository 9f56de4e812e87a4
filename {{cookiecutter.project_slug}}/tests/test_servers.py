"""The supported servers, each run as deployed: stream, end, heartbeat, disconnect,
broadcast, a stalled client, and a shutdown within 2 s with streams open.

uvicorn, at the oldest version pyproject.toml allows and the latest, is the server the
app is built for: its streams take the fast path (delivery.py), and a test fails if they
ever stop doing so. granian has a fast path of its own (`future`), tested the same way;
hypercorn (with `--workers 0`) works through ASGI `receive()`; hypercorn's default worker
processes cannot hear the shutdown, and the app warns about it at start-up.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn_process import APP, RawClient, UvicornProcess, uvicorn_process

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

UVICORN = (sys.executable, "-m", "uvicorn", APP, "--no-access-log", "--port", "{port}")
UVICORN_ARGS = ("--host", "127.0.0.1", "--log-level", "info")
#: name: (command, the delivery mode its streams must run in)
SERVERS: dict[str, tuple[tuple[str, ...], str]] = {
    "uvicorn": ((*UVICORN, *UVICORN_ARGS), "transport"),
    "uvicorn-h11": ((*UVICORN, *UVICORN_ARGS, "--http", "h11"), "transport"),
    "uvicorn-oldest": ((*UVICORN, *UVICORN_ARGS), "transport"),
    "granian": (
        (sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
        "future",
    ),
    "hypercorn": ((sys.executable, "-m", "hypercorn", "--workers", "0"), "receive"),
}
SETTINGS = {
    "message_count": 3,
    "message_interval": 0.2,
    "heartbeat_interval": 0.4,
    "send_timeout": 1,
    "retry_jitter": 0,
}


def _command(name: str) -> tuple[str, ...]:
    command, _ = SERVERS[name]
    if name == "granian":
        return (*command, "--port", "{port}", APP)
    if name == "hypercorn":
        return (*command, "--bind", "127.0.0.1:{port}", APP)
    return command


@pytest.fixture(params=list(SERVERS))
def server_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def served(
    server_name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker_settings: dict[str, object],
) -> Iterator[UvicornProcess]:
    env = request.getfixturevalue("oldest_uvicorn") if server_name == "uvicorn-oldest" else {}
    log = tmp_path / "server.log"
    with uvicorn_process(
        log=log, command=_command(server_name), env=env, **{**broker_settings, **SETTINGS}
    ) as server:
        yield server


def _url(server: UvicornProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def _wait_for_streams(server: UvicornProcess, count: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (streams := server.streams()) != count:
        assert time.monotonic() < deadline, f"{streams} streams open, not {count}"
        time.sleep(0.05)


def test_the_stream_ends_after_its_last_message(served: UvicornProcess, server_name: str):
    client = RawClient(served.port)
    asyncio.run(asyncio.wait_for(client.run(), 10))
    assert client.ended_cleanly, bytes(client.raw[-60:])
    assert client.ids() == [1, 2, 3]
    assert client.body().endswith(b"event: end\ndata: \n\n")
    assert served.log is not None
    _, mode = SERVERS[server_name]
    # The delivery mode is logged once, with the first stream.
    assert re.search(rf"event=delivery mode={mode}\b", served.log.read_text())


def test_an_idle_stream_gets_heartbeats(served: UvicornProcess):
    with (
        httpx.Client(timeout=5) as client,
        client.stream("GET", _url(served) + "/channels/beat/events") as response,
    ):
        assert response.status_code == 200
        started, seen = time.monotonic(), ""
        for text in response.iter_text():
            seen += text
            if seen.count(": ping") >= 2:
                break
        # Two heartbeats of a 0.4 s interval come within 0.8 s; room for a busy machine.
        assert time.monotonic() - started < 3


def test_a_client_that_leaves_is_noticed(served: UvicornProcess):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET /channels/leave/events HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        _wait_for_streams(served, 1)
    _wait_for_streams(served, 0, timeout=3)


def test_a_broadcast_reaches_every_subscriber(served: UvicornProcess):
    channel = "/channels/news"
    subscribers = [RawClient(served.port, path=channel + "/events", first=b": live") for _ in "ab"]

    async def scenario() -> None:
        firsts = [asyncio.Event() for _ in subscribers]
        tasks = [asyncio.create_task(s.run(f)) for s, f in zip(subscribers, firsts, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 5)
        async with httpx.AsyncClient(base_url=_url(served), timeout=5) as client:
            response = await client.post(channel + "/messages", json={"data": "hello"})
            assert response.status_code == 201
        deadline = time.monotonic() + 5
        while not all(b"data: hello" in s.raw for s in subscribers):
            assert time.monotonic() < deadline, "a subscriber missed the broadcast"
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_client_that_stops_reading_is_dropped(served: UvicornProcess):
    channel = "/channels/stall"
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(5)
        stalled.connect(("127.0.0.1", served.port))
        stalled.sendall(f"GET {channel}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert stalled.recv(12) == b"HTTP/1.1 200"  # and from now on, read nothing
        _wait_for_streams(served, 1)
        big = "x" * 60_000
        with httpx.Client(base_url=_url(served), timeout=5) as client:
            deadline = time.monotonic() + 10
            while served.streams() != 0:
                assert time.monotonic() < deadline, "the stalled client was not dropped"
                assert client.post(channel + "/messages", json={"data": big}).status_code == 201


def test_sigterm_with_streams_open_exits_within_2_s(served: UvicornProcess):
    clients = [RawClient(served.port, path="/channels/stop/events", first=b": live")]
    clients += [RawClient(served.port) for _ in range(9)]

    async def scenario() -> float:
        firsts = [asyncio.Event() for _ in clients]
        tasks = [asyncio.create_task(c.run(f)) for c, f in zip(clients, firsts, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 5)
        exit_seconds = await asyncio.to_thread(served.terminate)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return exit_seconds

    # The demo streams would end by themselves after 0.6 s: make them outlive the test.
    served.stop()
    served.env["SSE_MESSAGE_COUNT"] = "1000"
    served.start()
    exit_seconds = asyncio.run(scenario())
    assert exit_seconds < 2, f"the server took {exit_seconds:.2f} s to exit"
    assert all(client.ended_cleanly for client in clients), [c.error for c in clients]


def test_hypercorn_worker_processes_warn_that_they_cannot_hear_the_shutdown(
    tmp_path: Path, broker_settings: dict[str, object]
):
    log = tmp_path / "server.log"
    command = (sys.executable, "-m", "hypercorn", "--bind", "127.0.0.1:{port}", APP)
    with uvicorn_process(log=log, command=command, **broker_settings):
        pass
    assert "event=deaf_to_shutdown" in log.read_text()
