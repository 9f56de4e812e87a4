"""S4 channels at scale: `python -m benchmarks.s4 --channels 1000,10000`.

N channels with one subscriber each; one message is published to every channel each
second for `--messages` seconds. Reported per broker and N: deliveries made of those
expected, publish-to-receive p50/p99, the connections Redis holds, and the workers' CPU.

- `redis`: two workers (two uvicorn processes of the Redis bake) on one private
  redis-server. The publisher runs here and sends straight to Redis with the bake's own
  publish script (pipelined), as another service would: 10,000 HTTP publishes a second
  would measure the POST route on this machine's two cores, not delivery.
- `redis-cluster` (not run unless named in `--brokers`): the same two workers of the
  Redis bake on a private three-master Redis Cluster (SSE_REDIS_CLUSTER=1), published to
  with the bake's cluster publish script through redis-py's RedisCluster (pipelined per
  master); Redis connections are summed over the masters, and the most on one is shown.
- `memory`: one worker; the memory broker lives in it, so messages are published to it
  over HTTP (on a few keep-alive connections), and that cost is in its CPU.
"""

import argparse
import asyncio
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from . import bake, procs, redis_server
from .environment import describe
from .loadgen import http
from .loadgen.channels import channel_name
from .procstat import cpu_seconds
from .targets import REPO_ROOT, server_args

HTTP_PUBLISHERS = 8  # keep-alive connections publishing to the memory worker
PIPELINE = 200  # publishes per round trip to Redis


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s4")
    parser.add_argument("--channels", default="1000,10000", help="sizes, comma-separated")
    parser.add_argument("--brokers", default="redis,memory", help="of redis, redis-cluster, memory")
    parser.add_argument("--messages", type=int, default=10, help="rounds, one per interval")
    parser.add_argument("--publish-interval", type=float, default=1.0)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/s4.json")
    return parser.parse_args(argv)


@contextmanager
def workers(src: Path, count: int, env: dict[str, str]) -> Iterator[list[tuple[int, int]]]:
    """`count` uvicorn processes of the bake: (pid, port) each; stopped on exit."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            port = procs.free_port()
            argv = procs.python_module(
                "benchmarks.serve", *server_args("uvicorn", bake.app_module(src), str(src), port)
            )
            proc = stack.enter_context(procs.running(argv, env=env, port=port, cwd=REPO_ROOT))
            started.append((proc.pid, port))
        yield started


def publish_redis(
    src: Path, url: str, cluster: bool, channels: int, messages: int, interval: float
) -> None:
    """Every channel gets message `seq` at start + (seq - 1) x interval, through Redis."""
    import redis

    sys.path.insert(0, str(src))
    package = bake.app_module(src).split(".")[0]
    broker = importlib.import_module(f"{package}.broker.redis")
    if cluster:
        # redis-py refuses EVALSHA in a cluster pipeline: one plain pipeline per master,
        # each channel's message sent to the master of its slot.
        nodes = redis.RedisCluster.from_url(url)
        source = importlib.import_module(f"{package}.broker.redis_cluster").PUBLISH
        clients = [nodes.get_redis_connection(node) for node in nodes.get_primaries()]
        route = {
            name: nodes.get_redis_connection(nodes.get_node_from_key(broker.stream_key(name)))
            for name in map(channel_name, range(channels))
        }
    else:
        single = redis.Redis.from_url(url)
        source, clients = broker.PUBLISH, [single]
        route = dict.fromkeys(map(channel_name, range(channels)), single)
    (sha,) = {client.script_load(source) for client in clients}  # on every master
    start = time.monotonic()
    for seq in range(1, messages + 1):
        time.sleep(max(0.0, start + (seq - 1) * interval - time.monotonic()))
        # In pipelines of PIPELINE, each sent as soon as it is built: a message's time
        # stamp is taken just before it leaves, not while thousands more are queued.
        for first in range(0, channels, PIPELINE):
            pipes: dict[int, Any] = {}
            for index in range(first, min(first + PIPELINE, channels)):
                name = channel_name(index)
                client = route[name]
                pipe = pipes.get(id(client)) or pipes.setdefault(
                    id(client), client.pipeline(transaction=False)
                )
                data = f"s4:{seq}:{time.monotonic():.6f}"
                args = [20, "message", data, broker.live_key(name)]
                pipe.evalsha(sha, 1, broker.stream_key(name), *args)
            for pipe in pipes.values():
                pipe.execute()
    for client in clients:
        client.close()
    if cluster:
        nodes.close()


async def publish_http(port: int, channels: int, messages: int, interval: float) -> None:
    async def one_connection(indexes: range) -> None:
        reader, writer = await asyncio.open_connection(http.HOST, port)
        try:
            for seq in range(1, messages + 1):
                await asyncio.sleep(max(0.0, start + (seq - 1) * interval - time.monotonic()))
                for index in indexes:
                    body = json.dumps({"data": f"s4:{seq}:{time.monotonic():.6f}"}).encode()
                    path = f"/channels/{channel_name(index)}/messages"
                    writer.write(
                        http.build_request(
                            "POST", path, port, body, Content_Type="application/json"
                        )
                    )
                    _, headers = await http.read_head(reader)
                    await http.read_body(reader, http.decoder_for(headers))
        finally:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(
        *(one_connection(range(k, channels, HTTP_PUBLISHERS)) for k in range(HTTP_PUBLISHERS))
    )


def redis_connections(urls: list[str]) -> list[int]:
    """The connections each Redis server (each master of a cluster) holds."""
    import redis

    counts = []
    for url in urls:
        with redis.Redis.from_url(url) as admin:
            counts.append(int(admin.info("clients")["connected_clients"]) - 1)  # not itself
    return counts


def run_one(broker: str, src: Path, channels: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {"SSE_MAX_CLIENTS": "1000000", "SSE_HISTORY_SIZE": "20", "SSE_LOG_LEVEL": "warning"}
    with ExitStack() as stack:
        urls: list[str] = []
        if broker == "redis":
            urls = [stack.enter_context(redis_server.redis_url())]
        elif broker == "redis-cluster":
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sse-s4-")))
            urls = stack.enter_context(redis_server.redis_cluster_urls(workdir))
            env["SSE_REDIS_CLUSTER"] = "1"
        if urls:
            env["SSE_REDIS_URL"] = urls[0]  # any master of a cluster: the others are found
        started = stack.enter_context(workers(src, 2 if urls else 1, env))
        ports = ",".join(str(port) for _, port in started)
        loadgen = subprocess.Popen(
            procs.python_module(
                "benchmarks.loadgen.channels",
                *("--ports", ports, "--channels", str(channels)),
                *("--messages", str(args.messages), "--deadline", str(args.deadline)),
                *("--publish-interval", str(args.publish_interval)),
            ),
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        try:
            assert loadgen.stdout is not None
            if loadgen.stdout.readline().strip() != b"ready":
                raise RuntimeError("the load generator did not get ready")
            cpu_before = sum(cpu_seconds(pid) for pid, _ in started)
            connections = redis_connections(urls)
            if urls:
                cluster = broker == "redis-cluster"
                publish_redis(src, urls[0], cluster, channels, args.messages, args.publish_interval)
                after = redis_connections(urls)
                if sum(after) > sum(connections):
                    connections = after
            else:
                port = started[0][1]
                asyncio.run(publish_http(port, channels, args.messages, args.publish_interval))
            out, _ = loadgen.communicate(timeout=args.deadline + args.messages * 2)
            result = json.loads(out)
            cpu = sum(cpu_seconds(pid) for pid, _ in started) - cpu_before
        finally:
            procs.stop(loadgen)
    return {
        "broker": broker,
        "channels": channels,
        "workers": len(started),
        **result,
        "redis_connections": sum(connections) if urls else None,
        "redis_connections_most_on_one": max(connections) if urls else None,
        "workers_cpu_s": round(cpu, 2),
    }


def shown_connections(row: dict[str, Any]) -> str:
    total, most = row["redis_connections"], row.get("redis_connections_most_on_one")
    if total is None:
        return "-"
    return f"{total} ({most} on one master)" if row["broker"] == "redis-cluster" else str(total)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| broker | channels | workers | delivered | p50 | p99 | Redis conns | workers CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p50, p99 = (
            f"{row[k] * 1000:.0f} ms" if row[k] is not None else "-"
            for k in ("latency_p50", "latency_p99")
        )
        lines.append(
            f"| {row['broker']} | {row['channels']:,} | {row['workers']} "
            f"| {row['deliveries']:,} / {row['expected']:,} | {p50} | {p99} "
            f"| {shown_connections(row)} "
            f"| {row['workers_cpu_s']} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sse-s4-") as tmp:
        baked: dict[str, Path] = {}
        for broker in args.brokers.split(","):
            # The cluster runs the Redis bake, with SSE_REDIS_CLUSTER=1.
            kind = "redis" if broker == "redis-cluster" else broker
            if kind not in baked:
                baked[kind] = bake.bake(kind, Path(tmp))
            src = baked[kind]
            for channels in (int(n) for n in args.channels.split(",")):
                print(f"S4 {broker} n={channels}", file=sys.stderr, flush=True)
                rows.append(run_one(broker, src, channels, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
