"""results.json and results.md: every row, side by side per size, with ratios to the limit."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .stats import ratio
from .targets import REFERENCE

Row = dict[str, Any]
TITLES = {
    "s1": "S1 storm: N clients connect at once to `/events`",
    "s2": "S2 hold: N idle connections",
    "s3": "S3 fan-out: N subscribers on one channel, one publisher",
}


#: The number each scenario is judged by: the median run by it is the one reported.
HEADLINE = {"s1": "lateness_p99", "s2": "rss_per_conn_kb", "s3": "latency_p99"}


def write_json(path: Path, meta: dict[str, Any], rows: list[Row]) -> None:
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


def seconds(value: float | None, lower_bound: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'≥ ' if lower_bound else ''}{value:.3f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def spread(text: str, row: Row) -> str:
    """`text`, and the range of the headline number over all runs when there were several."""
    runs = row.get("runs")
    if not runs:
        return text
    digits = 1 if row["scenario"] == "s2" else 3
    return f"{text} ({min(runs):.{digits}f}-{max(runs):.{digits}f})"


def s1_cells(row: Row, ref: Row | None) -> list[str]:
    ref = ref or {}
    return [
        f"{row['completed']:,} of {row['clients']:,}",
        seconds(row["ttfe_p99"]),
        spread(seconds(row["lateness_p99"], row["lateness_is_lower_bound"]), row),
        times(ratio(row["lateness_p99"], ref.get("lateness_p99"))),
        number(row["cpu_s"], 2),
        times(ratio(row["cpu_s"], ref.get("cpu_s"))),
        number(row["peak_rss_mb"]),
        number(row["other_cpu_s"], 2),
    ]


def s2_cells(row: Row, ref: Row | None) -> list[str]:
    ref = ref or {}
    return [
        f"{row['held']:,} of {row['clients']:,}",
        spread(number(row["rss_per_conn_kb"]), row),
        times(ratio(row["rss_per_conn_kb"], ref.get("rss_per_conn_kb"))),
        f"{row['rss_before_mb']:.1f} → {row['rss_after_mb']:.1f}",
    ]


def s3_cells(row: Row, ref: Row | None) -> list[str]:
    ref = ref or {}
    return [
        f"{row['deliveries']:,} of {row['expected']:,}",
        seconds(row["latency_p50"]),
        spread(seconds(row["latency_p99"]), row),
        times(ratio(row["latency_p99"], ref.get("latency_p99"))),
        number(row["cpu_s"], 2),
        times(ratio(row["cpu_s"], ref.get("cpu_s"))),
        number(row["peak_rss_mb"]),
        number(row["other_cpu_s"], 2),
    ]


HEADERS = {
    "s1": [
        "complete",
        "TTFE p99 s",
        "lateness p99 s",
        "vs bare",
        "CPU s",
        "vs bare",
        "peak RSS MB",
        "other CPU s",
    ],
    "s2": ["held", "RSS/conn KB", "vs bare", "RSS MB before → after"],
    "s3": [
        "deliveries",
        "p50 s",
        "p99 s",
        "vs bare_broadcast",
        "CPU s",
        "vs bare_broadcast",
        "peak RSS MB",
        "other CPU s",
    ],
}
CELLS: dict[str, Callable[[Row, Row | None], list[str]]] = {
    "s1": s1_cells,
    "s2": s2_cells,
    "s3": s3_cells,
}


def scenario_table(scenario: str, rows: list[Row]) -> list[str]:
    lines = [
        f"### {TITLES[scenario]}",
        "",
        "| N | server | " + " | ".join(HEADERS[scenario]) + " |",
        "|---|---|" + "---|" * len(HEADERS[scenario]),
    ]
    for clients in sorted({r["clients"] for r in rows}):
        size_rows = [r for r in rows if r["clients"] == clients]
        ref = next(
            (r for r in size_rows if r["server"] == REFERENCE[scenario] and r["status"] == "ok"),
            None,
        )
        for row in size_rows:
            if row["status"] == "ok":
                cells = CELLS[scenario](row, ref)
            else:
                cells = [f"{row['status']}: {row.get('reason', '')}"] + [""] * (
                    len(HEADERS[scenario]) - 1
                )
            lines.append(f"| {clients:,} | {row['server']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta["environment"]["versions"].items() if v)
    env = meta["environment"]
    lines = [
        "## SSE benchmark",
        "",
        f"{env['date']}; {env['cores']} cores ({env['cpu']}); Python {env['python']}; "
        f"Linux {env['kernel']}; one uvicorn worker (uvloop + httptools).",
        f"Versions: {versions}.",
        f"Settings: {meta['settings']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "`vs bare`: ratio to the limit at the same N in this run. `other CPU s`: machine CPU",
        "used by everything but the server and the load generator while measuring: kernel",
        "loopback networking, redis-server, and other work on the box (noise: high values",
        "mean a shared machine). `≥`: clients were still waiting at the deadline.",
        "",
    ]
    if meta["settings"].get("repeat", 1) > 1:
        lines += [
            f"Each server ran up to {meta['settings']['repeat']} times per size, in turn with",
            "the others; each row is its median run by the headline number (lateness p99,",
            "RSS per connection, latency p99), whose range over the runs is in brackets. A",
            "server that failed or hit the deadline was not run again.",
            "",
        ]
    for scenario in TITLES:
        scenario_rows = [r for r in rows if r["scenario"] == scenario]
        if scenario_rows:
            lines += scenario_table(scenario, scenario_rows)
    return "\n".join(lines)


def write_markdown(path: Path, meta: dict[str, Any], rows: list[Row]) -> None:
    path.write_text(markdown(meta, rows))
