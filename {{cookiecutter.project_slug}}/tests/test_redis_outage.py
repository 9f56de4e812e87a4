"""Redis away at start-up, and lost while running: clear failure, clean recovery, no loss."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from {{ cookiecutter.project_slug }}.settings import Settings

from conftest import run_server
from redis_server import free_port, redis_server
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
            # The stream is ended cleanly, not left hanging.
            assert subscription.rest() == []

        health = client.get(app.url + "/healthz")
        assert health.status_code == 503
        assert "unreachable" in health.json()["reason"]
        refused = client.post(f"{app.url}/channels/{channel}/messages", json={"data": "x"})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert client.get(f"{app.url}/channels/{channel}/events").status_code == 503

        redis.start()
        assert wait_for(lambda: client.get(app.url + "/healthz").status_code == 200, 15)
        later = publish(client, app.url, channel, "after the outage")
        with subscribe(client, app.url, channel, last_id=acked[0]) as resumed:
            assert [event.id for event in resumed.events] == [*acked[1:], later]


@pytest.mark.parametrize("path", ["/healthz"])
def test_healthz_is_ok_with_redis(serve, client: httpx.Client, path: str):
    body = client.get(serve().url + path).json()
    assert (body["status"], body["broker"]) == ("ok", "redis")
