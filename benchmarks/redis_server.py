"""A private, throwaway redis-server on a free loopback port (never the machine's 6379)."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

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
