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

from uvicorn_process import RawClient, raise_open_file_limit, uvicorn_process

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
