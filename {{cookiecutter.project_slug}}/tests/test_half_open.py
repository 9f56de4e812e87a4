"""A client whose network vanishes mid-stream (no FIN, no RST) is dropped within a bound.

The client runs in a network namespace of its own, joined to this one by a veth pair
that the test creates and removes; cutting that link is what a closed laptop or a lost
mobile network looks like to the server: its writes are never acknowledged, and nothing
ever says the connection is gone. Without a bound, TCP retransmits for about 15 minutes.
Needs root (or passwordless sudo) and `ip`; in CI nothing may skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from uvicorn_process import uvicorn_process

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

HEARTBEAT, SEND_TIMEOUT = 1.0, 2.0
#: The README's bound: heartbeat interval + SSE_SEND_TIMEOUT + the timer's tick (1 s).
BOUND = HEARTBEAT + SEND_TIMEOUT + 1
#: Addresses of the test's own link only (198.18.0.0/15 is set aside for such tests).
SUBNET = f"198.18.{os.getpid() % 250}"
HOST_ADDRESS, CLIENT_ADDRESS = f"{SUBNET}.1", f"{SUBNET}.2"

# The client, run inside the namespace: subscribe, say so, then keep the socket open.
CLIENT = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.sendall(b"GET /channels/vanish/events HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
seen = b""
while b": live" not in seen:
    seen += sock.recv(4096)
print("live", flush=True)
time.sleep(120)
"""


def _ip_command() -> list[str]:
    """How to run `ip` with the rights namespaces need, or skip (fail in CI) saying why."""
    reason = ""
    if shutil.which("ip") is None:
        reason = "needs the `ip` command (iproute2)"
    elif os.geteuid() == 0:
        return ["ip"]
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"]).returncode == 0:
        return ["sudo", "-n", "ip"]
    else:
        reason = "needs root or passwordless sudo to create a network namespace"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def client_namespace() -> Iterator[tuple[list[str], str, str]]:
    """A namespace joined by a veth pair: (ip command, namespace, its end of the link)."""
    ip = _ip_command()
    suffix = str(os.getpid() % 100_000)
    namespace, host_end, client_end = f"sse-test-{suffix}", f"sseh{suffix}", f"ssec{suffix}"

    def run(*args: str) -> None:
        subprocess.run([*ip, *args], check=True, capture_output=True, timeout=10)

    try:
        run("netns", "add", namespace)
        run("link", "add", host_end, "type", "veth", "peer", "name", client_end)
        run("link", "set", client_end, "netns", namespace)
        run("addr", "add", f"{HOST_ADDRESS}/30", "dev", host_end)
        run("link", "set", host_end, "up")
        run("-n", namespace, "addr", "add", f"{CLIENT_ADDRESS}/30", "dev", client_end)
        run("-n", namespace, "link", "set", client_end, "up")
        yield ip, namespace, client_end
    finally:
        # Removing the namespace removes its end of the pair, and with it the other end.
        subprocess.run([*ip, "netns", "delete", namespace], capture_output=True, timeout=10)
        subprocess.run([*ip, "link", "delete", host_end], capture_output=True, timeout=10)


def test_a_client_whose_network_vanishes_is_dropped_within_the_bound(broker_settings):
    settings = {
        **broker_settings,
        "heartbeat_interval": HEARTBEAT,
        "send_timeout": SEND_TIMEOUT,
    }
    with (
        client_namespace() as (ip, namespace, client_end),
        uvicorn_process(host=HOST_ADDRESS, **settings) as server,
    ):
        in_namespace = [*ip, "netns", "exec", namespace]
        client = subprocess.Popen(
            [*in_namespace, sys.executable, "-c", CLIENT, HOST_ADDRESS, str(server.port)],
            stdout=subprocess.PIPE,
        )
        try:
            assert client.stdout is not None
            assert client.stdout.readline() == b"live\n"
            assert server.streams() == 1
            # The link goes dark: no FIN, no RST, nothing acknowledged from now on.
            subprocess.run(
                [*ip, "-n", namespace, "link", "set", client_end, "down"], check=True, timeout=10
            )
            cut = time.monotonic()
            while server.streams() != 0:
                # Generous: twice the bound, and still minutes before TCP would give up.
                assert time.monotonic() - cut < 2 * BOUND, "the vanished client's stream is open"
                time.sleep(0.2)
            print(f"dropped {time.monotonic() - cut:.1f} s after the cut (bound {BOUND:.0f} s)")
        finally:
            client.kill()
            client.wait(5)
