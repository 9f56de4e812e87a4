"""`python -m benchmarks.run`: bake, start each server in turn, load it, write the report.

Example (the reference run):
    python -m benchmarks.run --scenario s1,s2,s3 --s1-clients 1000,5000,10000 \
        --s2-clients 10000 --s3-clients 1000,10000 --out benchmarks/results/reference
"""

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from . import environment, plot, report, scenarios
from .bake import TEMPLATE_DIR
from .limits import raise_nofile
from .machine import wait_for_quiet
from .targets import TARGETS, Bakery, Unavailable, launch

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--scenario", type=name_list, default=["s1"], help="s1,s2,s3")
    parser.add_argument("--clients", type=int_list, default=[1000], help="sizes for every one")
    for s in ("s1", "s2", "s3"):
        parser.add_argument(f"--{s}-clients", type=int_list, help=f"sizes for {s} only")
    parser.add_argument("--servers", type=name_list, default=list(TARGETS), help="names, comma")
    parser.add_argument("--count", type=int, default=5, help="s1: events per stream")
    parser.add_argument("--interval", type=float, default=1.0, help="s1: seconds between")
    parser.add_argument("--deadline", type=float, default=60.0, help="per scenario run, s")
    parser.add_argument("--messages", type=int, default=10, help="s3: messages published")
    parser.add_argument("--publish-interval", type=float, default=1.0, help="s3: seconds")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="s1: load processes")
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="wait up to this for an idle machine, s"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE_DIR, help="template to bake (default: this repo)"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.servers if s not in TARGETS] + [
        s for s in args.scenario if s not in scenarios.RUNNERS
    ]
    if unknown:
        parser.error(f"unknown server or scenario: {', '.join(unknown)}")
    return args


def measure(
    scenario: str, server_name: str, clients: int, settings: scenarios.Settings, bakery: Bakery
) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": scenario, "server": server_name, "clients": clients}
    try:
        env = scenarios.server_env(scenario, settings)
        with launch(TARGETS[server_name], env, bakery) as server:
            if settings.quiet_wait > 0:
                row["machine_load_before"] = wait_for_quiet(settings.quiet_wait)
            row |= {"status": "ok"} | scenarios.RUNNERS[scenario](server, clients, settings)
    except Unavailable as exc:
        row |= {"status": "not available", "reason": str(exc)}
    except Exception as exc:  # one broken server must not lose the others' results
        row |= {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    return row


def summary(row: dict[str, Any]) -> str:
    keys = [
        "completed",
        "lateness_p99",
        "cpu_s",
        "loadgen_cpu_s",
        "held",
        "rss_per_conn_kb",
        "latency_p99",
    ]
    parts = [
        f"{k}={row[k]:.3f}" if isinstance(row.get(k), float) else f"{k}={row[k]}"
        for k in keys
        if k in row
    ]
    if row["status"] != "ok":
        parts = [f"{row['status']}: {row.get('reason', '')}"]
    return f"{row['scenario']} {row['server']} n={row['clients']}: " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()  # inherited by every server and load generator we start
    settings = scenarios.Settings(
        count=args.count,
        interval=args.interval,
        deadline=args.deadline,
        loadgen_procs=args.loadgen_procs,
        messages=args.messages,
        publish_interval=args.publish_interval,
        quiet_wait=args.quiet_wait,
    )
    meta = {
        "command": "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        "settings": settings.__dict__,
        "template": str(args.template),
        "environment": environment.describe(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    bakery = Bakery(args.template)
    try:
        for scenario in args.scenario:
            sizes = getattr(args, f"{scenario}_clients") or args.clients
            for clients in sizes:
                for name in args.servers:
                    if scenario not in TARGETS[name].scenarios:
                        continue
                    print(f"== {scenario} {name} n={clients}", file=sys.stderr, flush=True)
                    started = time.monotonic()
                    rows.append(measure(scenario, name, clients, settings, bakery))
                    took = time.monotonic() - started
                    print(f"   {summary(rows[-1])} ({took:.1f} s)", file=sys.stderr, flush=True)
                    # Written after every row, so an interrupted run keeps what it measured.
                    report.write_json(args.out / "results.json", meta, rows)
                    report.write_markdown(args.out / "results.md", meta, rows)
    finally:
        bakery.close()
    plot.write_png(args.out / "latency_p99.png", rows)
    print(f"wrote {args.out}/results.json, results.md, latency_p99.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
