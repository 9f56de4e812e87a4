"""GET /metrics: Prometheus text format, scraped from a real server after real streams."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.project_slug }} import hub as hub_module
from {{ cookiecutter.project_slug }}.hub import StreamHub
from {{ cookiecutter.project_slug }}.metrics import events_in, forget_dead_workers
from {{ cookiecutter.project_slug }}.sse import encode_comment, encode_event

from sse_client import new_channel, publish, subscribe, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client, url: str) -> Samples:
    response = client.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def read_all(client: httpx.Client, url: str, path: str = "/events") -> list[str]:
    with client.stream("GET", url + path) as response:
        assert response.status_code == 200
        return list(response.iter_lines())


def test_counts_the_events_of_a_finished_stream(serve, client: httpx.Client):
    running = serve(message_count=3, message_interval=0)
    before = scrape(client, running.url)
    read_all(client, running.url)
    after = scrape(client, running.url)
    # Message 1..3 and the `end` event; the retry line is not an event.
    assert value(after, "sse_events_sent_total") - value(before, "sse_events_sent_total") == 4
    assert value(after, "sse_streams_closed_total", reason="done") == 1
    assert value(after, "sse_open_streams") == 0


def test_heartbeats_are_not_counted_as_events(serve, client: httpx.Client):
    running = serve(message_count=2, message_interval=0.6, heartbeat_interval=0.1)
    lines = read_all(client, running.url)
    assert any(line.startswith(":") for line in lines), "the test needs heartbeats"
    assert value(scrape(client, running.url), "sse_events_sent_total") == 3


def test_open_streams_and_clients_that_leave(serve, client: httpx.Client):
    running = serve(message_count=1000, message_interval=0.1)
    with client.stream("GET", running.url + "/events") as response:
        lines = response.iter_lines()
        assert "id: 1" in lines
        assert value(scrape(client, running.url), "sse_open_streams") == 1
    assert wait_for(
        lambda: value(scrape(client, running.url), "sse_streams_closed_total", reason="gone")
    )
    samples = scrape(client, running.url)
    assert value(samples, "sse_open_streams") == 0
    assert value(samples, "sse_events_sent_total") >= 1


def test_events_of_a_stream_still_open_are_counted_at_scrape(serve, client: httpx.Client):
    running = serve(message_count=1000, message_interval=0.05, heartbeat_interval=60)
    with client.stream("GET", running.url + "/events") as response:
        lines = response.iter_lines()
        ids = 0
        while ids < 5:
            ids += next(lines).startswith("id: ")
        assert value(scrape(client, running.url), "sse_events_sent_total") >= 5


def test_publish_count_and_latency(serve, client: httpx.Client):
    running = serve(heartbeat_interval=60)
    channel = new_channel()
    with subscribe(client, running.url, channel) as subscription:
        for n in range(3):
            publish(client, running.url, channel, f"m{n}")
        assert len(subscription.take(3)) == 3
        samples = scrape(client, running.url)
    assert value(samples, "sse_publish_seconds_count") == 3
    assert 0 < value(samples, "sse_publish_seconds_sum") < 3
    assert value(samples, "sse_publish_seconds_bucket", le="+Inf") == 3
    assert value(samples, "sse_events_sent_total") >= 3


def test_a_stream_costs_prometheus_nothing(
    serve, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    """Streams are counted in plain integers and caught up on the timer's tick: opening
    and closing 40 streams takes no Prometheus lock per stream (S1 in benchmarks/)."""
    calls: list[str] = []
    for kind in (Counter, Gauge):
        for method in ("inc", "dec", "set"):
            original = getattr(kind, method, None)
            if original is not None:
                name = f"{kind.__name__}.{method}"
                monkeypatch.setattr(kind, method, counted(calls, name, original))
    running = serve(message_count=1, message_interval=0, heartbeat_interval=60)
    for _ in range(40):
        read_all(client, running.url)
    # A tick or two may have caught up meanwhile: a handful of calls each, not 40.
    assert len(calls) < 20, calls
    samples = scrape(client, running.url)
    assert value(samples, "sse_streams_closed_total", reason="done") == 40
    assert value(samples, "sse_events_sent_total") == 80
    assert value(samples, "sse_open_streams") == 0


def counted(calls: list[str], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return method(*args, **kwargs)

    return call


def test_streams_refused_over_the_limit_are_counted(serve, client: httpx.Client):
    running = serve(message_count=1000, message_interval=0.1, max_clients=1)
    with client.stream("GET", running.url + "/events") as response:
        lines = response.iter_lines()  # kept: a dropped line iterator closes the response
        assert "id: 1" in lines
        assert client.get(running.url + "/events").status_code == 503
        samples = scrape(client, running.url)
    assert value(samples, "sse_streams_refused_total") == 1
    assert value(samples, "sse_open_streams") == 1


@pytest.mark.parametrize(
    "frames",
    [
        [encode_event("a", id="1")],
        [encode_comment("ping"), encode_event("x\n\ny", id="2"), encode_comment("ping")],
        [encode_event(": ping"), encode_event("\n: not a comment\n\n", event="e")],
        [encode_comment("live"), encode_comment("ping")],
    ],
)
def test_events_in_counts_events_and_skips_comments(frames: list[bytes]):
    expected = sum(not frame.startswith(b":") for frame in frames)
    assert events_in(b"".join(frames)) == expected


# Several workers: prometheus-client's multiprocess mode adds up every worker's values.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_workers(tmp_path: Path{% if cookiecutter.broker == "redis" %}, redis_db{% endif %}) -> Iterator[tuple[str, Path]]:
    """`uvicorn --workers 2` in its own process group, with PROMETHEUS_MULTIPROC_DIR set."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SSE_MESSAGE_COUNT": "3",
        "SSE_MESSAGE_INTERVAL": "0.05",
{%- if cookiecutter.broker == "redis" %}
        "SSE_REDIS_URL": redis_db.url,
{%- endif %}
    }
    command = [sys.executable, "-m", "uvicorn", "{{ cookiecutter.project_slug }}.main:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=2) as client:

            def up() -> bool:
                try:
                    return client.get(url + "/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_for(up, timeout=30, step=0.2), "uvicorn --workers 2 did not start"
        yield url, metrics_dir
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def test_a_dead_workers_open_streams_are_forgotten(tmp_path: Path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    for pid in (dead, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")
    forget_dead_workers(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"counter_{dead}.db",  # what a dead worker counted still counts
        f"gauge_livesum_{os.getpid()}.db",
    ]


def test_several_workers_add_up_in_multiprocess_mode(two_workers: tuple[str, Path]):
    url, metrics_dir = two_workers
    clients = 8

    def one_client() -> None:
        with httpx.Client(timeout=10) as own:
            read_all(own, url)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    # Each worker writes its own files; every scrape, whichever worker answers it, adds
    # them all up, so repeated scrapes agree on the total.
    pids = {re.sub(r"\D", "", path.stem) for path in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2, sorted(metrics_dir.iterdir())
    with httpx.Client(timeout=10) as client:
        # Each worker moves its counts into its files on its timer's tick (<= 1 s).
        closed = "sse_streams_closed_total"
        assert wait_for(lambda: value(scrape(client, url), closed, reason="done") == clients)
        for _ in range(4):
            samples = scrape(client, url)
            assert value(samples, "sse_events_sent_total") == clients * 4
            assert value(samples, "sse_streams_closed_total", reason="done") == clients
            assert value(samples, "sse_open_streams") == 0


def test_a_broadcast_chunk_counts_for_every_client_but_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch,
):
    scans: list[bytes] = []

    def counting(chunk: bytes) -> int:
        scans.append(chunk)
        return events_in(chunk)

    monkeypatch.setattr(hub_module, "events_in", counting)
    hub = StreamHub(heartbeat_interval=15)
    frame = encode_event("x", id="1") + encode_event("y", id="2")
    for _ in range(3):  # one message, written to three subscribers
        hub.count_written(frame)
    hub.count_written(encode_comment("ping"))
    hub.count_written(b"".join([frame[:5], frame[5:]]))  # equal bytes, another object
    assert hub.events_sent == 8
    assert len(scans) == 3
