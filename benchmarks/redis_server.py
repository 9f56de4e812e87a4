"""Private, throwaway Redis on free loopback ports (never the machine's 6379): one
redis-server, or a three-master Redis Cluster."""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import procs


class RedisUnavailable(Exception):
    pass


@contextmanager
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed")
    port = procs.free_port()
    argv = [binary, "--port", str(port), "--bind", procs.HOST, "--save", "", "--appendonly", "no"]
    argv += ["--loglevel", "warning"]
    with procs.running(argv, port=port, startup_timeout=10, quiet=True):
        yield f"redis://{procs.HOST}:{port}/0"


#: Masters of the cluster `redis_cluster_urls` starts; the cluster bus is on port + 10000.
CLUSTER_MASTERS = 3
BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free loopback port whose cluster-bus port is free too (and below 65536)."""
    for _ in range(100):
        port = procs.free_port()
        if port + BUS_OFFSET > 65535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind((procs.HOST, port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RedisUnavailable("no free port pair for a cluster node")


def cluster_ok(cli: str, port: int) -> bool:
    info = [cli, "-h", procs.HOST, "-p", str(port), "cluster", "info"]
    done = subprocess.run(info, check=True, capture_output=True, text=True, timeout=10)
    return "cluster_state:ok" in done.stdout


@contextmanager
def redis_cluster_urls(workdir: Path) -> Iterator[list[str]]:
    """A private three-master Redis Cluster: the URL of each master, once its slots are ok."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RedisUnavailable("redis-server and redis-cli are needed for a cluster")
    with ExitStack() as stack:
        ports = []
        for index in range(CLUSTER_MASTERS):
            port = cluster_port()
            folder = workdir / f"cluster-node-{index}"
            folder.mkdir()
            argv = [binary, "--port", str(port), "--bind", procs.HOST, "--dir", str(folder)]
            argv += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            stack.enter_context(procs.running(argv, port=port, startup_timeout=10, quiet=True))
            ports.append(port)
        nodes = [f"{procs.HOST}:{port}" for port in ports]
        create = [cli, "--cluster", "create", *nodes, "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        for port in ports:
            while not cluster_ok(cli, port):
                if time.monotonic() > deadline:
                    raise RedisUnavailable("the benchmark's cluster is not ok after 30 s")
                time.sleep(0.1)
        yield [f"redis://{procs.HOST}:{port}" for port in ports]
