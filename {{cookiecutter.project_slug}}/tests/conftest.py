"""A real uvicorn server on a free loopback port, per test, with the settings it needs."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from {{ cookiecutter.project_slug }}.main import create_app
from {{ cookiecutter.project_slug }}.settings import Settings
{%- if cookiecutter.broker == "redis" %}

from redis_cluster import RedisClusterServers, redis_cluster
from redis_server import RedisServer, redis_server
{%- endif %}


@dataclass
class RunningServer:
    url: str
    settings: Settings
    app: FastAPI
    loop: asyncio.AbstractEventLoop

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the server's event loop (what a signal handler does)."""
        self.loop.call_soon_threadsafe(callback)


@contextmanager
def run_server(settings: Settings) -> Iterator[RunningServer]:
    """Serve the app on 127.0.0.1 in a background thread until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(url, settings, app, server.servers[0].get_loop())
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


{%- if cookiecutter.broker == "redis" %}


@pytest.fixture(scope="session")
def redis_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by using fresh channel names."""
    # Small stream nodes, so that approximate trimming shows with a short history.
    options = ("--appendonly", "no", "--stream-node-max-entries", "10")
    with redis_server(tmp_path_factory.mktemp("redis"), *options) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A three-master Redis Cluster for the session, made like `redis_db`."""
    options = ("--stream-node-max-entries", "10")
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster"), *options) as cluster:
        yield cluster


@pytest.fixture
def serve(redis_db: RedisServer) -> Iterator[Callable[..., RunningServer]]:
    """`serve(message_count=3, ...)` starts a server with those settings."""
    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(
            run_server(Settings(**{"redis_url": redis_db.url, **overrides}))
        )


@pytest.fixture
def broker_settings(redis_db: RedisServer) -> dict[str, object]:
    """Settings a server in a child process needs for its broker (the test Redis)."""
    return {"redis_url": redis_db.url}
{%- else %}


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """`serve(message_count=3, ...)` starts a server with those settings."""
    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(run_server(Settings(**overrides)))


@pytest.fixture
def broker_settings() -> dict[str, object]:
    """Settings a server in a child process needs for its broker: none in memory."""
    return {}
{%- endif %}


@pytest.fixture(scope="session")
def oldest_uvicorn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PYTHONPATH that puts the oldest uvicorn pyproject.toml allows before the installed one."""
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    oldest = re.search(r'"uvicorn\[standard\]>=([0-9.]+)"', pyproject)
    assert oldest, "pyproject.toml names no lowest uvicorn version"
    target = tmp_path_factory.mktemp("uvicorn-oldest")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    subprocess.run([*pip, str(target), f"uvicorn=={oldest[1]}"], check=True, timeout=300)
    return {"PYTHONPATH": str(target)}


@pytest.fixture
def server(serve: Callable[..., RunningServer]) -> RunningServer:
    """A server with quick demo settings: 3 messages, 0.2 s apart."""
    return serve(message_count=3, message_interval=0.2)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client
