"""Run one scenario at one size against one running server; return one result row.

The load generator runs in child processes; this side reads the server's CPU and memory
from /proc around it and turns the raw samples into the numbers the report shows.
"""

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from . import procs
from .machine import busy_seconds
from .procstat import cpu_seconds, peak_rss_bytes
from .stats import percentile
from .targets import Server

MB = 1024 * 1024
STARTUP_SLACK = 1.0  # load generators import in this time, then all start at once
KILL_SLACK = 60.0  # a load generator that outlives its own deadline by this is killed


@dataclass(frozen=True)
class Settings:
    count: int = 5
    interval: float = 1.0
    deadline: float = 60.0
    loadgen_procs: int = 1
    messages: int = 10
    publish_interval: float = 1.0
    quiet_wait: float = 0.0  # seconds to wait for an idle machine before each server
    repeat: int = 1  # runs per server and size; the report shows the median run


def server_env(scenario: str, settings: Settings) -> dict[str, str]:
    env = {"SSE_MAX_CLIENTS": "1000000"}
    if scenario == "s1":
        env |= {
            "SSE_MESSAGE_COUNT": str(settings.count),
            "SSE_MESSAGE_INTERVAL": str(settings.interval),
        }
    elif scenario == "s2":
        # Event 1 at once, event 2 in an hour: every connection sits idle while measured.
        env |= {"SSE_MESSAGE_COUNT": "2", "SSE_MESSAGE_INTERVAL": "3600"}
    return env


def run_loadgens(argvs: list[list[str]], timeout: float) -> list[dict[str, Any]]:
    """Run load generators side by side; each prints one JSON object on stdout."""
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE) for argv in argvs]
    outputs: list[dict[str, Any]] = []
    try:
        for child in children:
            out, _ = child.communicate(timeout=timeout)
            if child.returncode != 0:
                raise RuntimeError(f"load generator exited with code {child.returncode}")
            outputs.append(json.loads(out))
    finally:
        for child in children:
            procs.stop(child)
    return outputs


def loadgen_argv(scenario: str, server: Server, clients: int, *extra: str) -> list[str]:
    label = f"{scenario} {server.name} n={clients}"
    return procs.python_module(
        "benchmarks.loadgen",
        scenario,
        "--port",
        str(server.port),
        "--clients",
        str(clients),
        "--label",
        label,
        *extra,
    )


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def storm(server: Server, clients: int, settings: Settings) -> dict[str, Any]:
    start_at = time.monotonic() + STARTUP_SLACK
    argvs = [
        loadgen_argv(
            "s1",
            server,
            share,
            "--count",
            str(settings.count),
            "--interval",
            str(settings.interval),
            "--deadline",
            str(settings.deadline),
            "--start-at",
            f"{start_at:.6f}",
        )
        for share in split(clients, settings.loadgen_procs)
    ]
    cpu_before, busy_before = cpu_seconds(server.pid), busy_seconds()
    parts = run_loadgens(argvs, settings.deadline + KILL_SLACK)
    cpu = cpu_seconds(server.pid) - cpu_before
    loadgen_cpu = sum(p["loadgen_cpu_s"] for p in parts)
    lateness = [x for p in parts for x in p["lateness"]]
    return {
        "completed": sum(p["completed"] for p in parts),
        "connected": sum(p["connected"] for p in parts),
        "first_event": sum(p["first_event"] for p in parts),
        "ttfe_p99": percentile([x for p in parts for x in p["ttfe"]], 99),
        "lateness_p50": percentile(lateness, 50),
        "lateness_p99": percentile(lateness, 99),
        # Missing events were counted with the lateness reached at the deadline.
        "lateness_is_lower_bound": any(p["censored"] for p in parts),
        "cpu_s": cpu,
        "loadgen_cpu_s": loadgen_cpu,
        "other_cpu_s": busy_seconds() - busy_before - cpu - loadgen_cpu,
        "peak_rss_mb": peak_rss_bytes(server.pid) / MB,
        "errors": merge_counts(p["errors"] for p in parts),
    }


def hold(server: Server, clients: int, settings: Settings) -> dict[str, Any]:
    argv = loadgen_argv(
        "s2", server, clients, "--server-pid", str(server.pid), "--deadline", str(settings.deadline)
    )
    (part,) = run_loadgens([argv], settings.deadline + KILL_SLACK)
    per_conn = part["rss_per_conn"]
    return {
        "held": part["held"],
        "rss_before_mb": part["rss_before"] / MB,
        "rss_after_mb": part["rss_after"] / MB,
        "rss_per_conn_kb": per_conn / 1024 if per_conn is not None else None,
        "errors": part["errors"],
    }


def fanout(server: Server, clients: int, settings: Settings) -> dict[str, Any]:
    argv = loadgen_argv(
        "s3",
        server,
        clients,
        "--messages",
        str(settings.messages),
        "--publish-interval",
        str(settings.publish_interval),
        "--deadline",
        str(settings.deadline),
    )
    cpu_before, busy_before = cpu_seconds(server.pid), busy_seconds()
    timeout = 2 * settings.deadline + settings.messages * settings.publish_interval + KILL_SLACK
    (part,) = run_loadgens([argv], timeout)
    if "not_available" in part:
        return {"status": "not available", "reason": part["not_available"]}
    cpu = cpu_seconds(server.pid) - cpu_before
    other = busy_seconds() - busy_before - cpu - part["loadgen_cpu_s"]
    return {
        "subscribed": part["subscribed"],
        "published": part["published"],
        "deliveries": part["deliveries"],
        "expected": part["expected"],
        "complete_subscribers": part["complete_subscribers"],
        "latency_p50": percentile(part["latency"], 50),
        "latency_p99": percentile(part["latency"], 99),
        "latency_max": max(part["latency"], default=None),
        "cpu_s": cpu,
        "loadgen_cpu_s": part["loadgen_cpu_s"],
        "other_cpu_s": other,
        "peak_rss_mb": peak_rss_bytes(server.pid) / MB,
        "errors": part["errors"],
    }


def merge_counts(counts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            merged[key] = merged.get(key, 0) + value
    return merged


RUNNERS = {"s1": storm, "s2": hold, "s3": fanout}
