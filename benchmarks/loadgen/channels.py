"""S4 channels at scale: N channels with one subscriber each, spread over the workers.

`python -m benchmarks.loadgen.channels --ports 8001,8002 --channels 10000 --messages 10`
opens the N streams (channel i on worker i mod W), prints `ready` on stdout once every
one answered, then reads until each has `--messages` messages or the deadline passes,
and prints one JSON line. Each message's data is `s4:<seq>:<monotonic send time>`, so
publish-to-receive latency is read from the message alone (CLOCK_MONOTONIC is shared by
the processes of one machine).
"""

import argparse
import asyncio
import json
import re
import resource
import sys
from typing import Any

from ..limits import raise_nofile
from ..stats import percentile
from .fanout import Subscriber, follow_stamped
from .progress import Progress, report, wait_until

STAMP = re.compile(rb"s4:(\d+):(\d+\.\d+)")
SPARE_FDS = 64


def channel_name(index: int) -> str:
    return f"s4-{index}"


async def subscribe(
    port: int, index: int, messages: int, sub: Subscriber, progress: Progress, done: asyncio.Event
) -> None:
    def on_open() -> None:
        progress.ready += 1

    path = f"/channels/{channel_name(index)}/events"
    await follow_stamped(port, path, STAMP, messages, sub, progress, done, on_open)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = [int(port) for port in args.ports.split(",")]
    progress = Progress()
    reporter = asyncio.ensure_future(report(f"s4 n={args.channels}", progress))
    subs = [Subscriber() for _ in range(args.channels)]
    done = asyncio.Event()
    tasks = []
    for index, sub in enumerate(subs):
        port = ports[index % len(ports)]
        tasks.append(
            asyncio.ensure_future(subscribe(port, index, args.messages, sub, progress, done))
        )
        if index % 500 == 499:  # a steady connect, not a storm: S1 measures storms
            await asyncio.sleep(0.05)
    try:
        await wait_until(lambda: progress.ready + progress.failed >= args.channels, args.deadline)
        print("ready", flush=True)
        # The publisher starts now and takes `messages` seconds; then the deliveries drain.
        await wait_until(
            lambda: progress.done + progress.failed >= args.channels,
            args.messages * args.publish_interval + args.deadline,
        )
    finally:
        done.set()
        await asyncio.gather(*tasks)
        reporter.cancel()
    latency = [x for s in subs for x in s.latencies]
    errors: dict[str, int] = {}
    for sub in subs:
        if sub.result.error:
            errors[sub.result.error] = errors.get(sub.result.error, 0) + 1
    return {
        "subscribed": sum(1 for s in subs if s.result.status == 200),
        "deliveries": sum(len(s.latencies) for s in subs),
        "expected": args.channels * args.messages,
        "complete_subscribers": sum(1 for s in subs if len(s.seen) == args.messages),
        "errors": errors,
        # Summed up here: the samples of 10,000 subscribers would be megabytes of JSON.
        "latency_p50": percentile(latency, 50),
        "latency_p99": percentile(latency, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.channels")
    parser.add_argument("--ports", required=True, help="the workers' ports, comma-separated")
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--publish-interval", type=float, default=1.0)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    raise_nofile(args.channels + SPARE_FDS)
    try:
        from uvloop import run as run_loop
    except ImportError:
        from asyncio import run as run_loop
    result = run_loop(run(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(result), flush=True)
    print(f"  [s4] finished, {result['deliveries']} deliveries", file=sys.stderr)


if __name__ == "__main__":
    main()
