"""Redis away at start-up, and lost while running: clear failure, clean recovery, no loss."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from {{ cookiecutter.project_slug }}.settings import Settings

from conftest import run_server
from redis_server import RedisServer, free_port, redis_server
from sse_client import new_channel, publish, subscribe, wait_for


def test_the_app_will_not_start_without_redis(tmp_path: Path):
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [
            *(sys.executable, "-m", "uvicorn", "{{ cookiecutter.project_slug }}.main:app"),
            *("--host", "127.0.0.1", "--port", str(free_port())),
        ],
        env={**os.environ, "SSE_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    # One line that says why, and no traceback around it.
    [reason] = [line for line in result.stderr.splitlines() if "Cannot start" in line]
    assert f"Cannot start: cannot reach Redis at 127.0.0.1:{port}" in reason
    assert "Traceback" not in result.stderr, result.stderr


def test_redis_lost_and_back(tmp_path: Path):
    # Persistence on, as in production: an acknowledged message survives the restart.
    options = ("--appendonly", "yes", "--appendfsync", "always")
    with (
        redis_server(tmp_path, *options) as redis,
        run_server(Settings(redis_url=redis.url, retry_ms=100)) as app,
        httpx.Client(timeout=10) as client,
    ):
        channel = new_channel()
        with subscribe(client, app.url, channel) as subscription:
            acked = [publish(client, app.url, channel, f"m{n}") for n in range(3)]
            assert [event.id for event in subscription.take(3)] == acked
            redis.stop()
            # Ended cleanly once Redis stays away (not left hanging): the client retries.
            assert subscription.rest() == []

        health = client.get(app.url + "/healthz")
        assert health.status_code == 503
        assert "unreachable" in health.json()["reason"]
        refused = client.post(f"{app.url}/channels/{channel}/messages", json={"data": "x"})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        # A subscriber is not refused (an EventSource would give up for good on a 503):
        # it is told when to retry, and the stream ends.
        during = client.get(f"{app.url}/channels/{channel}/events")
        assert during.status_code == 200
        assert re.fullmatch(
            r"retry: \d+\n\n: the message broker is unreachable[^\n]*\n\n", during.text
        )

        redis.start()
        assert wait_for(lambda: client.get(app.url + "/healthz").status_code == 200, 15)
        later = publish(client, app.url, channel, "after the outage")
        with subscribe(client, app.url, channel, last_id=acked[0]) as resumed:
            assert [event.id for event in resumed.events] == [*acked[1:], later]


@pytest.mark.slow
def test_a_redis_that_stops_answering_is_given_up_and_found_again(tmp_path: Path):
    """Redis frozen (SIGSTOP): its connections stay open and nothing answers on them.

    That is what a Redis, or the worker's own host, cut off the network looks like to the
    worker: no error, only silence. After SILENCE (10 s) without even a PONG the worker
    takes the subscription connection for dead, after 5 s more it ends its streams, and
    once Redis answers again it serves as before.
    """
    with (
        redis_server(tmp_path) as redis,
        run_server(Settings(redis_url=redis.url, retry_ms=100, heartbeat_interval=1)) as app,
        httpx.Client(timeout=10) as client,
    ):
        assert redis.process is not None
        channel = new_channel()
        with subscribe(client, app.url, channel) as subscription:
            acked = publish(client, app.url, channel, "before")
            assert subscription.take(1)[0].id == acked
            redis.process.send_signal(signal.SIGSTOP)
            try:
                frozen = time.monotonic()
                # Heartbeats keep coming until the stream ends; 10 + 5 s, and room.
                for _ in subscription.lines:
                    assert time.monotonic() - frozen < 25, "the stream outlived a silent Redis"
                ended = time.monotonic() - frozen
                health = client.get(app.url + "/healthz")
            finally:
                redis.process.send_signal(signal.SIGCONT)
        assert ended >= 10, f"ended after {ended:.1f} s: a silent Redis is given 10 s"
        assert health.status_code == 503, health.text

        assert wait_for(lambda: client.get(app.url + "/healthz").status_code == 200, 15)
        with subscribe(client, app.url, channel, last_id=acked) as resumed:
            later = publish(client, app.url, channel, "after")
            assert [event.id for event in resumed.take(1)] == [later]


def test_a_paused_redis_loses_no_stream(redis_db: RedisServer, serve, client: httpx.Client):
    """CLIENT PAUSE holds every reply for 3 s: streams stay open and resume where they were."""
    app = serve()
    channel = new_channel()
    with subscribe(client, app.url, channel) as subscription:
        first = publish(client, app.url, channel, "before")
        assert subscription.take(1)[0].id == first
        with Redis(port=redis_db.port) as admin:
            admin.client_pause(3000)
        started = time.monotonic()
        # Published during the pause: acknowledged once Redis answers again.
        during = publish(httpx.Client(timeout=10), app.url, channel, "during")
        after = publish(client, app.url, channel, "after")
        got = subscription.take(2)
        assert time.monotonic() - started >= 2, "the pause did happen"
        assert [event.id for event in got] == [during, after]


def test_a_lost_subscription_connection_is_made_again_with_no_gap(
    redis_db: RedisServer, serve, client: httpx.Client
):
    app = serve()
    channel = new_channel()
    with subscribe(client, app.url, channel) as subscription, Redis(port=redis_db.port) as admin:
        ids = [publish(client, app.url, channel, "before")]
        assert subscription.take(1)[0].id == ids[0]
        for n in range(3):
            assert wait_for(lambda: admin.client_list(_type="pubsub"), 10)
            killed = admin.client_kill_filter(_type="pubsub")
            assert killed >= 1, "the worker's subscription connection was there to cut"
            # Published while the worker has no subscription: filled in from history.
            ids.append(publish(client, app.url, channel, f"m{n}"))
        ids.append(publish(client, app.url, channel, "after"))
        assert [event.id for event in subscription.take(len(ids) - 1)] == ids[1:]


@pytest.mark.parametrize("path", ["/healthz"])
def test_healthz_is_ok_with_redis(serve, client: httpx.Client, path: str):
    body = client.get(serve().url + path).json()
    assert (body["status"], body["broker"]) == ("ok", "redis")
