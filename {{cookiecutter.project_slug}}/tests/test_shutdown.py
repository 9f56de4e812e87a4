"""SIGTERM and restarts: a worker full of open streams stops at once, and nothing is lost.

A streaming response that never ends keeps uvicorn "Waiting for connections to close"
for ever; the hub ends every stream when the signal arrives. Clients then reconnect to
the restarted worker with Last-Event-ID and get exactly the messages they miss.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from uvicorn_process import RawClient, raise_open_file_limit, uvicorn_process

from conftest import RunningServer

CLIENTS = 1000
COUNT = 6
INTERVAL = 0.4


async def _open_all(clients: list[RawClient], timeout: float) -> list[asyncio.Task[None]]:
    """Start every client; return once each has received its first message."""
    firsts = [asyncio.Event() for _ in clients]
    tasks = [asyncio.create_task(c.run(first)) for c, first in zip(clients, firsts, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(first.wait() for first in firsts)), timeout)
    return tasks


def _refused(port: int) -> bool:
    """True when a new connection gets no stream: refused, or closed without an answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            return not sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return True


def test_sigterm_ends_1000_streams_and_clients_resume_after_a_restart(
    tmp_path: Path, broker_settings: dict[str, object]
):
    raise_open_file_limit(CLIENTS + 200)
    settings = {
        **broker_settings,
        **{"message_count": COUNT, "message_interval": INTERVAL, "retry_ms": 100},
    }
    log = tmp_path / "uvicorn.log"
    clients = [RawClient(0) for _ in range(CLIENTS)]

    async def scenario() -> float:
        with uvicorn_process(log=log, **settings) as server:
            for client in clients:
                client.port = server.port
            tasks = await _open_all(clients, timeout=30)
            assert server.streams() == CLIENTS
            # SIGTERM while every stream is mid-way (message 1 or 2 of COUNT sent).
            exit_seconds = await asyncio.to_thread(server.terminate)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert _refused(server.port), "the stopped worker's port must be closed"

            resumed = [RawClient(server.port, str(max(c.ids()))) for c in clients]
            server.start()
            await asyncio.wait_for(
                asyncio.gather(*(c.run() for c in resumed)), COUNT * INTERVAL + 20
            )
        for first, second in zip(clients, resumed, strict=True):
            assert first.ended_cleanly, (first.error, bytes(first.raw[-40:]))
            assert second.ended_cleanly and b"event: end" in second.body()
            assert first.ids() + second.ids() == list(range(1, COUNT + 1))
        return exit_seconds

    exit_seconds = asyncio.run(scenario())
    assert exit_seconds < 2, f"uvicorn took {exit_seconds:.2f} s to exit after SIGTERM"
    # uvicorn logs this (at INFO) when open responses hold its shutdown up.
    assert b"Waiting for connections to close" not in log.read_bytes()
    print(f"exit after SIGTERM: {exit_seconds:.2f} s")


def test_a_reload_ends_open_streams_at_once(tmp_path: Path, broker_settings: dict[str, object]):
    """`uvicorn --reload` with a page open restarts at once, not after the stream ends."""
    watched = tmp_path / "watched"
    watched.mkdir()
    args = ("--reload", "--reload-dir", str(watched))
    settings = {**broker_settings, "message_count": 1000, "message_interval": 0.5}
    with uvicorn_process(args=args, **settings) as server:
        client = RawClient(server.port)

        async def reload_with_a_stream_open() -> float:
            first = asyncio.Event()
            task = asyncio.create_task(client.run(first))
            await asyncio.wait_for(first.wait(), 10)
            (watched / "changed.py").write_text("# a code change\n")
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(task, 10)
            return asyncio.get_running_loop().time() - started

        ended_after = asyncio.run(reload_with_a_stream_open())
        assert client.ended_cleanly
        assert ended_after < 3, f"the stream ended {ended_after:.2f} s after the change"
        deadline = time.monotonic() + 10
        while server.streams() is None:  # the new worker process comes up
            assert time.monotonic() < deadline, "no worker answered after the reload"
            time.sleep(0.1)


def test_sigterm_to_a_multi_worker_server_ends_every_stream_at_once(
    broker_settings: dict[str, object],
):
    """`--workers` (or WEB_CONCURRENCY, as in the image): the supervisor passes SIGTERM on."""
    settings = {**broker_settings, "message_count": 1000, "message_interval": 0.5}
    with uvicorn_process(args=("--workers", "2"), **settings) as server:
        clients = [RawClient(server.port) for _ in range(100)]

        async def stop_with_streams_open() -> float:
            tasks = await _open_all(clients, timeout=20)
            exit_seconds = await asyncio.to_thread(server.terminate)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            return exit_seconds

        exit_seconds = asyncio.run(stop_with_streams_open())
    assert all(client.ended_cleanly for client in clients)
    assert exit_seconds < 3, f"the workers took {exit_seconds:.2f} s to exit after SIGTERM"


OPEN = 10
OPENING = 40


def test_streams_that_open_while_the_server_stops_end_at_once(
    tmp_path: Path, broker_settings: dict[str, object]
):
    """Stopping is a state: a stream accepted after the signal gets `retry` and ends too.

    10 channel streams are open and 40 more connect over 0.2 s; SIGTERM comes right
    after the 10th of them. Streams ended only at the moment of the signal would leave
    the later ones open, and uvicorn waiting for them for ever.
    """
    log = tmp_path / "uvicorn.log"
    path = "/channels/race/events"

    async def scenario(server) -> tuple[float, list[RawClient]]:
        held = [RawClient(server.port, path=path, first=b": live") for _ in range(OPEN)]
        tasks = await _open_all(held, timeout=10)
        opening = [RawClient(server.port, path=path) for _ in range(OPENING)]
        stopped: asyncio.Task[float] | None = None
        for number, client in enumerate(opening, 1):
            tasks.append(asyncio.create_task(client.run()))
            if number == 10:
                stopped = asyncio.create_task(asyncio.to_thread(server.terminate))
            await asyncio.sleep(0.2 / OPENING)
        assert stopped is not None
        exit_seconds = await stopped
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return exit_seconds, held + opening

    with uvicorn_process(log=log, **{**broker_settings, "retry_ms": 100}) as server:
        exit_seconds, clients = asyncio.run(scenario(server))
    assert exit_seconds < 2, f"uvicorn took {exit_seconds:.2f} s to exit after SIGTERM"
    answered = [client for client in clients if client.status]
    assert len(answered) >= OPEN
    for client in answered:  # every stream that opened ended, none was cut
        assert client.status == 200 and client.ended_cleanly, bytes(client.raw[-60:])
        assert client.body().startswith(b"retry: ")
    print(f"exit after SIGTERM: {exit_seconds:.2f} s, {len(answered)} streams answered")


@pytest.mark.parametrize("uvicorn", ["latest", "oldest"])
def test_limit_max_requests_ends_an_open_stream(
    broker_settings: dict[str, object], request: pytest.FixtureRequest, uvicorn: str
):
    """`--limit-max-requests 1` with a stream open: no signal, and uvicorn counts a request
    only when its response completes, so only the app can end the stream that is the limit.
    """
    args = ("--limit-max-requests", "1")
    env = request.getfixturevalue("oldest_uvicorn") if uvicorn == "oldest" else {}
    with uvicorn_process(args=args, probe_with_request=False, env=env, **broker_settings) as server:
        client = RawClient(server.port, path="/channels/limit/events")
        started = time.monotonic()
        asyncio.run(asyncio.wait_for(client.run(), 5))
        assert server.proc is not None
        server.proc.wait(5)
        exit_seconds = time.monotonic() - started
    assert client.status == 200 and client.ended_cleanly, bytes(client.raw[-60:])
    assert exit_seconds < 2, f"uvicorn took {exit_seconds:.2f} s to exit after its last request"


@pytest.mark.parametrize("path", ["/events", "/channels/late/events"])
def test_once_stopping_a_stream_that_opens_gets_retry_and_ends(serve, path: str):
    running: RunningServer = serve(retry_ms=1000, retry_jitter=0)
    hub = running.app.state.hub
    running.call_soon(hub.close_all)  # what the first SIGTERM does
    with httpx.Client(timeout=5) as client:
        deadline = time.monotonic() + 5
        while not hub.stopping:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = client.get(running.url + path)
    assert response.status_code == 200
    assert response.text == "retry: 1000\n\n"
