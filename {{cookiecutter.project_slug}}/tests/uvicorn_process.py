"""The app under the real `uvicorn` command in a child process, and raw-socket SSE clients.

Shutdown, restarts and memory are properties of the process, so these tests run the
server the way it is deployed and talk to it over plain sockets: 1,000 clients are 1,000
asyncio connections in the test process, with no HTTP library in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

APP = "{{ cookiecutter.project_slug }}.main:app"
#: The zero-size last chunk of a chunked body.
END_OF_BODY = b"\r\n0\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_file_limit(needed: int) -> None:
    """Each client is a socket in this process: make room for them (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        import pytest

        reason = f"needs {needed} open files; the hard limit is {hard}"
        if os.environ.get("CI"):  # in CI nothing may skip
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class UvicornProcess:
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    args: tuple[str, ...] = ()
    #: Whether the start-up probe may send a request (`--limit-max-requests` counts it).
    probe_with_request: bool = True
    #: Another server's command line instead of uvicorn's, `{port}` in it replaced.
    command: tuple[str, ...] = ()
    host: str = "127.0.0.1"

    def start(self, timeout: float = 15) -> None:
        log = self.log.open("ab") if self.log else subprocess.DEVNULL
        command = [part.format(port=self.port) for part in self.command] or [
            *(sys.executable, "-m", "uvicorn", APP, "--no-access-log"),
            *("--host", self.host, "--port", str(self.port), "--log-level", "info"),
        ]
        self.proc = subprocess.Popen(
            [*command, *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group: stop() ends all of it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} at start")
            if self.probe_with_request and self.streams() is not None:
                return
            if not self.probe_with_request and self.listening():
                return
            time.sleep(0.05)
        raise RuntimeError("the server did not start in time")

    def listening(self) -> bool:
        """True once the port accepts connections (uvicorn listens after its start-up)."""
        try:
            socket.create_connection((self.host, self.port), timeout=2).close()
        except OSError:
            return False
        return True

    def streams(self) -> int | None:
        """Open streams per /healthz, or None while nothing answers."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
        except OSError:
            return None
        if not data.startswith(b"HTTP/1.1 200"):
            return None
        body = data.split(b"\r\n\r\n", 1)[1]
        return int(body.split(b'"streams":', 1)[1].split(b",")[0].split(b"}")[0])

    def rss_kib(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
        )

    def terminate(self) -> float:
        """SIGTERM, then seconds until the process exited (killed after 10 s)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.args or self.command:  # a supervisor: let it stop its children
                self.terminate()
            else:
                self.proc.kill()
                self.proc.wait(5)
        # Whatever it left behind (a worker orphaned by a crash) goes too: it could still
        # hold the port and answer the next server's clients.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def uvicorn_process(
    log: Path | None = None,
    args: tuple[str, ...] = (),
    probe_with_request: bool = True,
    command: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    **settings: object,
) -> Iterator[UvicornProcess]:
    env = {**(env or {}), **{f"SSE_{name.upper()}": str(value) for name, value in settings.items()}}
    server = UvicornProcess(
        free_port(),
        env,
        log=log,
        args=args,
        probe_with_request=probe_with_request,
        command=command,
        host=host,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RawClient:
    """One SSE client on a plain socket: sends GET `path`, keeps every byte it gets."""

    port: int
    last_event_id: str | None = None
    path: str = "/events"
    #: What marks the first message: a demo message's id, a channel stream's live mark.
    first: bytes = b"\nid: "
    raw: bytearray = field(default_factory=bytearray)
    error: str = ""

    async def run(self, got_first: asyncio.Event | None = None) -> None:
        """Read until the server closes; `got_first` is set once `first` has arrived."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError as exc:  # refused: the server has stopped listening
            self.error = type(exc).__name__
            return
        resume = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        writer.write(f"GET {self.path} HTTP/1.1\r\nHost: t\r\n{resume}\r\n".encode())
        try:
            while chunk := await reader.read(65536):
                self.raw += chunk
                if got_first is not None and self.first in self.raw:
                    got_first.set()
                    got_first = None
                if self.raw.endswith(END_OF_BODY):  # the server may keep the connection
                    break
        except OSError as exc:
            self.error = type(exc).__name__
        finally:
            writer.close()

    @property
    def status(self) -> int:
        return int(self.raw[9:12]) if self.raw.startswith(b"HTTP/1.1 ") else 0

    @property
    def ended_cleanly(self) -> bool:
        """The server finished the chunked body (the zero-size last chunk)."""
        return not self.error and self.raw.endswith(END_OF_BODY)

    def body(self) -> bytes:
        """The response body with the chunked transfer coding removed."""
        rest = bytes(self.raw).split(b"\r\n\r\n", 1)[1]
        body = bytearray()
        while b"\r\n" in rest:  # a body cut short ends at its last whole line
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return bytes(body)

    def ids(self) -> list[int]:
        """The ids of the messages received, in order."""
        return [
            int(line[4:]) for line in self.body().decode().split("\n") if line.startswith("id: ")
        ]
