"""Start and stop the processes a run owns: by PID, terminate first, kill on timeout."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

HOST = "127.0.0.1"
STOP_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts on `port`; fail early if our process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {HOST}:{port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def only_child(pid: int, timeout: float = 10.0) -> int:
    """The one child process of `pid` (a server's single worker), once it has started."""
    deadline = time.monotonic() + timeout
    while True:
        children = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(child) for child in f.read().split()]
        if len(children) == 1:
            return children[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} has {len(children)} children, not one worker")
        time.sleep(0.05)


@contextmanager
def running(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    cwd: str | None = None,
    startup_timeout: float = 30.0,
    quiet: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` for the duration of the block; always stopped, also on errors.

    `quiet` drops the child's stdout (redis-server's start-up banner), never its stderr.
    """
    full_env = {**os.environ, **(env or {})}
    stdout = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(
        list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout
    )
    try:
        if port is not None:
            wait_for_port(port, proc, startup_timeout)
        yield proc
    finally:
        stop(proc)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
