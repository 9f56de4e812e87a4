"""A throw-away redis-server for the tests: loopback, a free port, stopped by its PID.

Never the default port 6379, so a developer's own Redis is never touched. Without
redis-server the Redis tests are skipped with a line saying what to install, unless
SSE_REQUIRE_REDIS=1 (as in CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MISSING = "redis-server not found: install it (apt install redis-server) to run the Redis tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("SSE_REQUIRE_REDIS") == "1":
                pytest.fail(MISSING)
            pytest.skip(MISSING)
        self.binary = binary
        self.workdir = workdir
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The same port and folder on every start: a restart is the same server again.
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.workdir), "--save", "", *self.options),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@contextmanager
def redis_server(workdir: Path, *options: str) -> Iterator[RedisServer]:
    """A running redis-server; `options` are extra redis-server arguments."""
    server = RedisServer(workdir, *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
