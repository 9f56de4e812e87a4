"""What WAIT costs a publish: `python -m benchmarks.wait_cost --sizes 100,10000`.

A private master and one replica (loopback, free ports); two workers of the Redis bake
on that master, one with `SSE_REDIS_WAIT_REPLICAS=0` (201 once the master has the
message), one with `=1` (201 once the replica has it too). Publishes go to both in turns,
one at a time each on a keep-alive connection, so both see the same machine at the same
moment. Reported per message size: POST-to-201 latency p50/p99 of each, and the answers
that were not 201.
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from . import bake, procs
from .environment import describe
from .loadgen import http
from .stats import percentile
from .targets import REPO_ROOT, server_args

WARM_UP = 50  # publishes per worker before timing (connections, script cache)
WAITS = (0, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_cost")
    parser.add_argument("--sizes", default="100,10000", help="data bytes, comma-separated")
    parser.add_argument("--messages", type=int, default=2000, help="publishes per worker")
    parser.add_argument("--wait-timeout", type=float, default=1.0, help="SSE_REDIS_WAIT_TIMEOUT")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per size")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/wait.json")
    return parser.parse_args(argv)


@contextmanager
def master_and_replica(workdir: Path) -> Iterator[tuple[str, int]]:
    """A redis-server and its replica, both without persistence: (master URL, replica port).

    In `workdir`: a replica writes the copy its first sync receives to its folder.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    common = [binary, "--bind", procs.HOST, "--save", "", "--appendonly", "no"]
    common += ["--loglevel", "warning", "--dir", str(workdir)]
    master, replica = procs.free_port(), procs.free_port()
    with ExitStack() as stack:
        stack.enter_context(
            procs.running([*common, "--port", str(master)], port=master, quiet=True)
        )
        follow = ["--replicaof", procs.HOST, str(master)]
        stack.enter_context(
            procs.running([*common, "--port", str(replica), *follow], port=replica, quiet=True)
        )
        wait_for_sync(replica)
        yield f"redis://{procs.HOST}:{master}/0", replica


def wait_for_sync(port: int, timeout: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    with redis.Redis(host=procs.HOST, port=port) as replica:
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.05)


@contextmanager
def worker(src: Path, env: dict[str, str]) -> Iterator[int]:
    port = procs.free_port()
    argv = procs.python_module(
        "benchmarks.serve", *server_args("uvicorn", bake.app_module(src), str(src), port)
    )
    with procs.running(argv, env=env, port=port, cwd=REPO_ROOT):
        yield port


class Publisher:
    """One keep-alive connection to a worker; `publish` times one POST to its answer."""

    def __init__(self, port: int, channel: str) -> None:
        self.port = port
        self.path = f"/channels/{channel}/messages"
        self.latencies: list[float] = []
        self.refused: dict[int, int] = {}

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(http.HOST, self.port)

    async def publish(self, body: bytes, timed: bool = True) -> None:
        request = http.build_request(
            "POST", self.path, self.port, body, Content_Type="application/json"
        )
        started = time.perf_counter()
        self.writer.write(request)
        status, headers = await http.read_head(self.reader)
        await http.read_body(self.reader, http.decoder_for(headers))
        if timed:
            self.latencies.append(time.perf_counter() - started)
            if status != 201:
                self.refused[status] = self.refused.get(status, 0) + 1

    def close(self) -> None:
        self.writer.close()


async def measure(ports: dict[int, int], size: int, messages: int) -> dict[int, Publisher]:
    body = json.dumps({"data": "x" * size}).encode()
    publishers = {wait: Publisher(port, f"wait-{size}") for wait, port in ports.items()}
    for publisher in publishers.values():
        await publisher.open()
    try:
        for _ in range(WARM_UP):
            for publisher in publishers.values():
                await publisher.publish(body, timed=False)
        turns = list(publishers.values())
        for n in range(messages):
            # Each goes first every other turn: neither always follows the other's write.
            for publisher in turns if n % 2 else reversed(turns):
                await publisher.publish(body)
    finally:
        for publisher in publishers.values():
            publisher.close()
    return publishers


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f} ms"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data bytes | WAIT replicas | publishes | p50 | p99 | not 201 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']:,} | {row['wait_replicas']} | {row['publishes']:,} "
            f"| {ms(row['p50'])} | {ms(row['p99'])} | {row['refused'] or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sse-wait-") as tmp, ExitStack() as stack:
        src = bake.bake("redis", Path(tmp))
        url, _ = stack.enter_context(master_and_replica(Path(tmp)))
        ports = {}
        for wait in WAITS:
            env = {
                "SSE_REDIS_URL": url,
                "SSE_REDIS_WAIT_REPLICAS": str(wait),
                "SSE_REDIS_WAIT_TIMEOUT": str(args.wait_timeout),
                "SSE_LOG_LEVEL": "warning",
            }
            ports[wait] = stack.enter_context(worker(src, env))
        for size in (int(n) for n in args.sizes.split(",")):
            print(f"WAIT cost, {size} bytes", file=sys.stderr, flush=True)
            measured = asyncio.run(
                asyncio.wait_for(measure(ports, size, args.messages), args.deadline)
            )
            for wait, publisher in measured.items():
                rows.append(
                    {
                        "size": size,
                        "wait_replicas": wait,
                        "publishes": len(publisher.latencies),
                        "p50": percentile(publisher.latencies, 50),
                        "p99": percentile(publisher.latencies, 99),
                        "refused": publisher.refused,
                    }
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
