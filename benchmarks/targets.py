"""The servers a run can measure, and how to start one on a free loopback port."""

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import bake, procs, redis_server

REPO_ROOT = Path(__file__).resolve().parent.parent
UVICORN_BACKLOG = 4096  # Linux caps it at net.core.somaxconn (4096 here); same for all
GROWN_SECRET = "benchmark-secret-" + "x" * 32  # turns private channels on; not a real one


@dataclass(frozen=True)
class Target:
    name: str
    scenarios: frozenset[str]
    module: str | None = None  # a comparison server: `benchmarks.servers.<x>:app`
    broker: str | None = None  # the baked app, baked with this broker
    #: Set with `broker`: a module that builds the baked app and adds to it.
    grown: str | None = None
    #: The ASGI server: uvicorn (uvloop + httptools) or granian (one worker, uvloop).
    server: str = "uvicorn"


S1_S2 = frozenset({"s1", "s2"})
S3 = frozenset({"s3"})
S1_S3 = frozenset({"s1", "s3"})
TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        # S2 would only show the thread pool's size: each held stream pins a thread.
        Target("tutorial", frozenset({"s1"}), module="benchmarks.servers.tutorial:app"),
        Target("fastapi_sse", S1_S2, module="benchmarks.servers.fastapi_sse:app"),
        Target("sse_starlette", S1_S2, module="benchmarks.servers.starlette_sse:app"),
        Target("bare", S1_S2, module="benchmarks.servers.bare:app"),
        # The same app under granian, whose HTTP side is Rust: the frontier for Python.
        Target(
            "bare_granian",
            frozenset({"s1"}),
            module="benchmarks.servers.bare:app",
            server="granian",
        ),
        Target("bare_broadcast", S3, module="benchmarks.servers.broadcast:app"),
        Target(
            "bare_broadcast_granian",
            S3,
            module="benchmarks.servers.broadcast:app",
            server="granian",
        ),
        Target("baked", frozenset({"s1", "s2", "s3"}), broker="memory"),
        # With a user's CORSMiddleware and the channels' authorization switched on.
        Target(
            "baked_grown", frozenset({"s1"}), broker="memory", grown="benchmarks.servers.grown:app"
        ),
        # FastAPI and the same CORSMiddleware around the bare stream: the floor for
        # baked_grown, whose difference from it is the stream code's own.
        Target("fastapi_floor", frozenset({"s1"}), module="benchmarks.servers.fastapi_floor:app"),
        # `/events` does not touch the broker, so Redis only changes S3.
        Target("baked_redis", S3, broker="redis"),
        Target("baked_granian", S1_S3, broker="memory", server="granian"),
    ]
}
# Each scenario's limit, the denominator of every ratio in the report.
REFERENCE = {"s1": "bare", "s2": "bare", "s3": "bare_broadcast"}


class Unavailable(Exception):
    """This target cannot run here (not baked yet, no redis-server, ...)."""


@dataclass(frozen=True)
class Server:
    name: str
    pid: int
    port: int


class Bakery:
    """Bakes the template once per broker per run, into one temporary folder."""

    def __init__(self, template: Path = bake.TEMPLATE_DIR) -> None:
        self._template = template
        self._tmp = tempfile.TemporaryDirectory(prefix="sse-bench-")
        self._baked: dict[str, Path | Exception] = {}

    def src(self, broker: str) -> Path:
        if broker not in self._baked:
            try:
                self._baked[broker] = bake.bake(broker, Path(self._tmp.name), self._template)
            except Exception as exc:  # any bake failure makes only this target unavailable
                self._baked[broker] = exc
        baked = self._baked[broker]
        if isinstance(baked, Exception):
            raise Unavailable(f"bake with broker={broker} failed: {baked}")
        return baked

    def close(self) -> None:
        self._tmp.cleanup()


@contextmanager
def launch(target: Target, env: Mapping[str, str], bakery: Bakery) -> Iterator[Server]:
    """Start `target` under its server (one worker, see server_args); stop it on exit."""
    port = procs.free_port()
    server_env = dict(env)
    if target.broker is not None:
        src = bakery.src(target.broker)
        app, app_dir = bake.app_module(src), str(src)
        if target.grown is not None:
            server_env["SSE_BENCH_MAIN"] = app.partition(":")[0]
            server_env["PYTHONPATH"] = app_dir
            server_env["SSE_AUTH_SECRET"] = GROWN_SECRET
            app, app_dir = target.grown, str(REPO_ROOT)
    else:
        assert target.module is not None
        app, app_dir = target.module, str(REPO_ROOT)
    with ExitStack() as stack:
        if target.broker == "redis":
            try:
                server_env["SSE_REDIS_URL"] = stack.enter_context(redis_server.redis_url())
            except redis_server.RedisUnavailable as exc:
                raise Unavailable(str(exc)) from exc
        argv = procs.python_module(
            "benchmarks.serve", *server_args(target.server, app, app_dir, port)
        )
        proc = stack.enter_context(procs.running(argv, env=server_env, port=port, cwd=REPO_ROOT))
        # granian serves from a worker process of its own: its CPU and memory are the ones.
        pid = procs.only_child(proc.pid) if target.server == "granian" else proc.pid
        yield Server(target.name, pid, port)


def server_args(server: str, app: str, app_dir: str, port: int) -> list[str]:
    """One worker on `port`, no access log, the fastest loop and HTTP/1.1 parser."""
    if server == "granian":
        return [
            "granian",
            app,
            "--interface",
            "asgi",
            "--working-dir",
            app_dir,
            "--host",
            procs.HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            str(UVICORN_BACKLOG),
            # granian's default caps a worker at backlog // workers requests in flight
            # (4,096 here): each open stream is one, so the 4,097th waits.
            "--backpressure",
            "1000000",
        ]
    return [
        "uvicorn",
        app,
        "--app-dir",
        app_dir,
        "--host",
        procs.HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--backlog",
        str(UVICORN_BACKLOG),
        # Streams that outlive the scenario must not hold the server up for ever.
        "--timeout-graceful-shutdown",
        "2",
    ]
