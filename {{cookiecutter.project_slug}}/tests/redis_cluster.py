"""A throw-away Redis Cluster for the tests: three masters on free loopback ports.

Each master is a `redis-server --cluster-enabled yes` in its own folder; `redis-cli
--cluster create` gives them the 16384 slots, and the cluster is handed over once every
node reports `cluster_state:ok`. They are stopped by their PIDs. Like redis_server.py:
without redis-server (or redis-cli) the tests skip, and fail when SSE_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from redis_server import RedisServer

MISSING = "redis-cli not found: install it (apt install redis-server) to run the cluster tests"
MASTERS = 3
#: A node's cluster bus listens on its port + 10000, so both must be free and below 65536.
BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        port = random.randint(20000, 65535 - BUS_OFFSET)
        try:
            for candidate in (port, port + BUS_OFFSET):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    def __init__(self, servers: list[RedisServer], cli: str) -> None:
        self.servers = servers
        self.cli = cli
        #: The URL the service is given: any node is a seed, the first one is used.
        self.url = f"redis://127.0.0.1:{servers[0].port}"
        self.ports = [server.port for server in servers]

    def run_cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            check=True,
            text=True,
            timeout=30,
        )
        return done.stdout

    def wait_until_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.run_cli(port, "cluster", "info") for port in self.ports]
            if all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster is not ok after {timeout:g} s")
            time.sleep(0.1)


@contextmanager
def redis_cluster(workdir: Path, *options: str) -> Iterator[RedisClusterServers]:
    """Three running, joined cluster masters; `options` are extra redis-server arguments."""
    cli = shutil.which("redis-cli")
    if cli is None:
        if os.environ.get("SSE_REQUIRE_REDIS") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with ExitStack() as stack:
        servers = []
        for index in range(MASTERS):
            folder = workdir / f"node{index}"
            folder.mkdir()
            server = RedisServer(
                folder,
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", "2000", "--appendonly", "no", *options),
            )
            server.port = cluster_port()
            server.url = f"redis://127.0.0.1:{server.port}/0"
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        cluster = RedisClusterServers(servers, cli)
        nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
        cluster.run_cli(cluster.ports[0], "--cluster", "create", *nodes, "--cluster-yes")
        cluster.wait_until_ok()
        yield cluster
