"""The benchmark keeps working: one tiny run of every scenario against every server.

Only completion and outputs are checked. Timings on a shared CI machine are noise, so no
test here ever compares a latency, a CPU time or a memory figure to a threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import spread
from benchmarks.run import SETTING_HELP, median_run, worth_repeating
from benchmarks.scenarios import Settings

TEMPLATE = Path(__file__).resolve().parent.parent
CLIENTS = 20
TINY_RUN = [
    "--scenario", "s1,s2,s3",
    "--clients", str(CLIENTS),
    "--count", "2",
    "--interval", "0.2",
    "--messages", "2",
    "--publish-interval", "0.2",
    "--deadline", "20",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *TINY_RUN, "--out", str(out)],
        cwd=TEMPLATE,
        check=True,
        timeout=240,
    )
    return out


def rows(out: Path) -> list[dict[str, Any]]:
    return list(json.loads((out / "results.json").read_text())["results"])


def row(out: Path, scenario: str, server: str) -> dict[str, Any]:
    return next(r for r in rows(out) if r["scenario"] == scenario and r["server"] == server)


def test_writes_json_markdown_and_png(tiny_run: Path) -> None:
    assert rows(tiny_run)
    assert "S1 storm" in (tiny_run / "results.md").read_text()
    assert (tiny_run / "latency_p99.png").read_bytes().startswith(b"\x89PNG")


def test_every_server_gets_a_row_for_every_scenario_it_serves(tiny_run: Path) -> None:
    measured = {(r["scenario"], r["server"]) for r in rows(tiny_run)}
    assert {("s1", "tutorial"), ("s1", "fastapi_sse"), ("s1", "sse_starlette")} <= measured
    assert {("s2", "bare"), ("s3", "bare_broadcast"), ("s3", "baked")} <= measured


def test_granian_rows_measure_its_worker(tiny_run: Path) -> None:
    """granian serves from a child process, which the runner finds and measures."""
    for scenario, server in [
        ("s1", "bare_granian"),
        ("s1", "baked_granian"),
        ("s3", "baked_granian"),
    ]:
        assert row(tiny_run, scenario, server)["status"] == "ok"
    for server in ("bare_granian", "baked_granian"):
        assert row(tiny_run, "s1", server)["completed"] == CLIENTS


def test_no_server_errors(tiny_run: Path) -> None:
    # "not available" (e.g. no redis-server here) is allowed; a crash is not.
    assert [r for r in rows(tiny_run) if r["status"] == "error"] == []


@pytest.mark.parametrize("server", ["bare", "baked"])
def test_every_storm_client_completes(tiny_run: Path, server: str) -> None:
    result = row(tiny_run, "s1", server)
    assert result["status"] == "ok", result.get("reason")
    assert result["completed"] == CLIENTS


@pytest.mark.parametrize("server", ["bare", "baked"])
def test_every_hold_connection_is_held(tiny_run: Path, server: str) -> None:
    result = row(tiny_run, "s2", server)
    assert result["status"] == "ok", result.get("reason")
    assert result["held"] == CLIENTS


def test_bare_broadcast_delivers_every_message(tiny_run: Path) -> None:
    result = row(tiny_run, "s3", "bare_broadcast")
    assert result["status"] == "ok", result.get("reason")
    assert result["deliveries"] == result["expected"] == CLIENTS * 2


def test_the_redis_bake_runs_where_redis_is_required(tiny_run: Path) -> None:
    if os.environ.get("SSE_REQUIRE_REDIS") != "1":
        pytest.skip("redis-server may be missing here; SSE_REQUIRE_REDIS=1 makes it required")
    measured = [r for r in rows(tiny_run) if r["server"] == "baked_redis"]
    assert measured, "baked_redis never ran"
    assert all(r["status"] == "ok" for r in measured), measured


@pytest.mark.parametrize("server", ["baked", "baked_redis"])
def test_baked_brokers_complete_wherever_they_run(tiny_run: Path, server: str) -> None:
    # "not available" (no redis-server, or a template without that route) is reported in
    # the results with its reason; whatever did run must have served every client.
    served = {"s1": "completed", "s2": "held", "s3": "complete_subscribers"}
    for result in rows(tiny_run):
        if result["server"] == server and result["status"] == "ok":
            assert result[served[result["scenario"]]] == CLIENTS, result


# --repeat: the report shows each server's median run, and never hides a failed one.


def run_row(value: float, status: str = "ok") -> dict[str, Any]:
    return {"scenario": "s1", "server": "baked", "status": status, "lateness_p99": value}


def test_the_median_run_is_reported_with_the_range_of_all_runs() -> None:
    runs = [run_row(0.9), run_row(0.3), run_row(0.5), run_row(0.4)]
    chosen = median_run(runs)
    assert chosen["lateness_p99"] == 0.4  # the lower middle of an even count: a real run
    assert chosen["runs"] == [0.9, 0.3, 0.5, 0.4]
    assert spread("0.400", chosen) == "0.400 (0.300-0.900)"
    assert median_run([run_row(0.7)]) == run_row(0.7)


def test_a_failed_run_is_never_outvoted() -> None:
    failed = run_row(0.0, status="error")
    assert median_run([run_row(0.3), failed, run_row(0.4)]) is failed
    assert not worth_repeating(failed)
    assert not worth_repeating(run_row(58.0) | {"lateness_is_lower_bound": True})
    assert worth_repeating(run_row(0.3) | {"lateness_is_lower_bound": False})


def test_every_setting_is_an_option_of_the_runner() -> None:
    assert set(SETTING_HELP) == {field.name for field in fields(Settings)}


def test_a_run_that_measured_nothing_is_reported_not_sorted() -> None:
    empty = run_row(0.3) | {"lateness_p99": None}
    assert median_run([run_row(0.3), empty, run_row(0.4)]) is empty
    assert not worth_repeating(empty)


def test_s4_delivers_every_message_on_every_channel(tmp_path: Path) -> None:
    """S4 at tiny size: each channel's one subscriber gets each message, on both brokers."""
    out = tmp_path / "s4.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.s4", "--channels", str(CLIENTS)),
            *("--messages", "2", "--publish-interval", "0.2", "--deadline", "20"),
            *("--out", str(out)),
        ],
        cwd=TEMPLATE,
        check=True,
        timeout=240,
    )
    measured = json.loads(out.read_text())["rows"]
    assert {r["broker"] for r in measured} == {"redis", "memory"}
    for result in measured:
        assert result["deliveries"] == result["expected"] == 2 * CLIENTS, result
    redis = next(r for r in measured if r["broker"] == "redis")
    assert redis["workers"] == 2 and redis["redis_connections"] <= 16


def test_wait_cost_times_both_settings_side_by_side(tmp_path: Path) -> None:
    """The WAIT benchmark at tiny size: each size timed with WAIT=0 and WAIT=1, all 201."""
    out = tmp_path / "wait.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.wait_cost", "--sizes", "10,1000"),
            *("--messages", "5", "--out", str(out)),
        ],
        cwd=TEMPLATE,
        check=True,
        timeout=240,
    )
    measured = json.loads(out.read_text())["rows"]
    assert {(r["size"], r["wait_replicas"]) for r in measured} == {
        (10, 0), (10, 1), (1000, 0), (1000, 1)
    }  # fmt: skip
    for result in measured:
        assert result["publishes"] == 5 and not result["refused"], result


def test_s4_runs_on_a_redis_cluster(tmp_path: Path) -> None:
    """S4 at tiny size on a three-master Redis Cluster: each message on each channel."""
    out = tmp_path / "s4-cluster.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.s4", "--channels", str(CLIENTS)),
            *("--brokers", "redis-cluster", "--messages", "2", "--publish-interval", "0.2"),
            *("--deadline", "20", "--out", str(out)),
        ],
        cwd=TEMPLATE,
        check=True,
        timeout=240,
    )
    (result,) = json.loads(out.read_text())["rows"]
    assert result["broker"] == "redis-cluster" and result["workers"] == 2
    assert result["deliveries"] == result["expected"] == 2 * CLIENTS, result
    # Per worker and master: at most 6 + 2 command connections and one subscription.
    assert result["redis_connections_most_on_one"] <= 2 * 9, result
