"""A throw-away Redis Cluster for the tests: three masters on free loopback ports.

Each node is a `redis-server --cluster-enabled yes` in its own folder; `redis-cli
--cluster create` gives the masters the 16384 slots (and each its replicas, if asked
for), and the cluster is handed over once every node reports `cluster_state:ok`. They
are stopped by their PIDs. Like redis_server.py: without redis-server (or redis-cli)
the tests skip, and fail when SSE_REQUIRE_REDIS=1.
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
        #: The masters' ports, as the cluster says (read again after a failover).
        self.ports: list[int] = []

    def alive(self) -> list[int]:
        return [s.port for s in self.servers if s.process is not None and s.process.poll() is None]

    def read_masters(self) -> None:
        self.ports = []
        for line in self.run_cli(self.alive()[0], "cluster", "nodes").splitlines():
            # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
            fields = line.split()
            flags = fields[2].split(",")
            if "master" in flags and "fail" not in flags and len(fields) > 8:
                self.ports.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))

    def replica_of(self, master: int) -> int:
        """The port of the replica of the master on `master`."""
        info = {port: self.run_cli(port, "info", "replication") for port in self.alive()}
        return next(port for port, text in info.items() if f"master_port:{master}\n" in text)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        server = next(server for server in self.servers if server.port == port)
        assert server.process is not None
        server.process.kill()
        server.process.wait(5)

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
            states = [self.run_cli(port, "cluster", "info") for port in self.alive()]
            if all("cluster_state:ok" in state for state in states) and self._replicas_synced():
                self.read_masters()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster is not ok after {timeout:g} s")
            time.sleep(0.1)

    def _replicas_synced(self) -> bool:
        roles = [self.run_cli(port, "info", "replication") for port in self.alive()]
        return all("role:master" in role or "master_link_status:up" in role for role in roles)


@contextmanager
def redis_cluster(workdir: Path, *options: str, replicas: int = 0) -> Iterator[RedisClusterServers]:
    """Three running, joined cluster masters with `replicas` replicas each; `options` are
    extra redis-server arguments."""
    cli = shutil.which("redis-cli")
    if cli is None:
        if os.environ.get("SSE_REQUIRE_REDIS") == "1":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with ExitStack() as stack:
        servers = []
        for index in range(MASTERS * (1 + replicas)):
            folder = workdir / f"node{index}"
            folder.mkdir()
            server = RedisServer(
                folder,
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", "2000", "--appendonly", "no", *options),
            )
            for attempt in range(3):  # a port taken meanwhile: another one
                server.port = cluster_port()
                server.url = f"redis://127.0.0.1:{server.port}/0"
                try:
                    server.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
            stack.callback(server.stop)
            servers.append(server)
        cluster = RedisClusterServers(servers, cli)
        nodes = [f"127.0.0.1:{server.port}" for server in servers]
        create = ("--cluster", "create", *nodes, "--cluster-replicas", str(replicas))
        cluster.run_cli(servers[0].port, *create, "--cluster-yes")
        cluster.wait_until_ok()
        yield cluster
