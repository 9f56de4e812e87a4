"""`python -m benchmarks.loadgen {s1,s2,s3} ...`: run one scenario, print JSON on stdout.

Progress goes to stderr once a second. Runs in its own process so its CPU never counts
against the server's; the runner starts it and reads the JSON.
"""

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from ..limits import raise_nofile
from . import fanout, hold, storm
from .progress import Progress, report

# Descriptors beyond the client sockets: stdio, the event loop's own, a publisher.
SPARE_FDS = 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("scenario", choices=["s1", "s2", "s3"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--label", default="loadgen")
    parser.add_argument("--start-at", type=float, default=0.0, help="CLOCK_MONOTONIC start")
    parser.add_argument("--count", type=int, default=5, help="s1: events per stream")
    parser.add_argument("--interval", type=float, default=1.0, help="s1: seconds between")
    parser.add_argument("--server-pid", type=int, default=0, help="s2: whose RSS to read")
    parser.add_argument("--messages", type=int, default=10, help="s3: messages published")
    parser.add_argument("--publish-interval", type=float, default=1.0, help="s3: seconds")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    progress = Progress()
    reporter = asyncio.ensure_future(report(args.label, progress))
    # Several load generators start connecting at the same instant.
    delay = args.start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        if args.scenario == "s1":
            config = storm.StormConfig(
                args.port, args.clients, args.count, args.interval, args.deadline
            )
            return await storm.run(config, progress)
        if args.scenario == "s2":
            hold_config = hold.HoldConfig(args.port, args.clients, args.server_pid, args.deadline)
            return await hold.run(hold_config, progress)
        fanout_config = fanout.FanoutConfig(
            args.port, args.clients, args.messages, args.publish_interval, args.deadline
        )
        try:
            return await fanout.run(fanout_config, progress)
        except fanout.NotAvailable as exc:
            return {"not_available": str(exc)}
    finally:
        reporter.cancel()
        print(f"  [{args.label}] finished: {progress.line()}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_nofile(args.clients + SPARE_FDS)
    try:
        # The clients should cost as little CPU as the fastest server does.
        from uvloop import run as run_loop
    except ImportError:
        from asyncio import run as run_loop
    result = run_loop(run(args))
    # The load generator's own CPU tells whether it, not the server, was the bottleneck.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
