"""`python -m benchmarks.run`: bake, start each server in turn, load it, write the report.

Example (the reference run):
    python -m benchmarks.run --scenario s1,s2,s3 --s1-clients 1000,5000,10000 \
        --s2-clients 10000 --s3-clients 1000,10000 --repeat 3 --quiet-wait 30 \
        --out benchmarks/results/reference
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
from .scenarios import Settings
from .targets import TARGETS, Bakery, Unavailable, launch

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


SETTING_HELP = {
    "count": "s1: events per stream",
    "interval": "s1: seconds between",
    "deadline": "per scenario run, s",
    "messages": "s3: messages published",
    "publish_interval": "s3: seconds between publishes",
    "loadgen_procs": "s1: load processes",
    "repeat": "runs per server and size, in turn; the report shows the median run",
    "quiet_wait": "wait up to this for an idle machine before each run, s",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--scenario", type=name_list, default=["s1"], help="s1,s2,s3")
    parser.add_argument("--clients", type=int_list, default=[1000], help="sizes for every one")
    for s in ("s1", "s2", "s3"):
        parser.add_argument(f"--{s}-clients", type=int_list, help=f"sizes for {s} only")
    parser.add_argument("--servers", type=name_list, default=list(TARGETS), help="names, comma")
    # One option per field of Settings, which holds the defaults.
    for name, help_text in SETTING_HELP.items():
        default = getattr(Settings, name)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=help_text
        )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE_DIR, help="template to bake (default: this repo)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    unknown = [s for s in args.servers if s not in TARGETS] + [
        s for s in args.scenario if s not in scenarios.RUNNERS
    ]
    if unknown:
        parser.error(f"unknown server or scenario: {', '.join(unknown)}")
    return args


def measure(
    scenario: str, server_name: str, clients: int, settings: Settings, bakery: Bakery
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


def worth_repeating(row: dict[str, Any]) -> bool:
    """Not a server that failed, measured nothing, or still had clients waiting at the
    deadline: another run would only take as long again to show the same."""
    return (
        row["status"] == "ok"
        and row.get(report.HEADLINE[row["scenario"]]) is not None
        and not row.get("lateness_is_lower_bound", False)
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose headline number is the median of all runs, with their spread.

    One whole run rather than a median per column, so every number in a row comes from
    the same measurement. A failed run, or one that measured nothing, is reported as
    such: it is never outvoted.
    """
    key = report.HEADLINE[runs[0]["scenario"]]
    failed = [r for r in runs if r["status"] != "ok" or r.get(key) is None]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2] | {"runs": [r[key] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()  # inherited by every server and load generator we start
    settings = Settings(**{name: getattr(args, name) for name in SETTING_HELP})
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
                names = [n for n in args.servers if scenario in TARGETS[n].scenarios]
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                # Round-robin, so that a slow spell of a shared machine hits every server.
                for round_ in range(1, args.repeat + 1):
                    for name in names:
                        if runs[name] and not worth_repeating(runs[name][-1]):
                            continue
                        label = f" run {round_} of {args.repeat}" if args.repeat > 1 else ""
                        print(f"== {scenario} {name} n={clients}{label}", file=sys.stderr)
                        started = time.monotonic()
                        runs[name].append(measure(scenario, name, clients, settings, bakery))
                        took = time.monotonic() - started
                        print(f"   {summary(runs[name][-1])} ({took:.1f} s)", file=sys.stderr)
                        # Written after every run, so an interrupted run keeps what it measured.
                        partial = rows + [median_run(r) for r in runs.values() if r]
                        report.write_json(args.out / "results.json", meta, partial)
                        report.write_markdown(args.out / "results.md", meta, partial)
                rows += [median_run(runs[name]) for name in names]
    finally:
        bakery.close()
    plot.write_png(args.out / "latency_p99.png", rows)
    print(f"wrote {args.out}/results.json, results.md, latency_p99.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
