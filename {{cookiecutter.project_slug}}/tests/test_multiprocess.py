"""Two uvicorn processes on one Redis are one service: publish on either, resume on either."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from redis_server import RedisServer, free_port
from sse_client import new_channel, publish, subscribe, wait_for

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@contextmanager
def worker(redis_url: str) -> Iterator[str]:
    """A uvicorn process serving the app; its base URL. Stopped by its PID."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "{{ cookiecutter.project_slug }}.main:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        env={**os.environ, "SSE_REDIS_URL": redis_url},
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(healthy, 30), "the worker did not start"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_publish_on_one_worker_reaches_both_and_resumes_on_the_other(redis_db: RedisServer):
    channel = new_channel()
    with ExitStack() as stack:
        first = stack.enter_context(worker(redis_db.url))
        second = stack.enter_context(worker(redis_db.url))
        client = stack.enter_context(httpx.Client(timeout=10))
        other = stack.enter_context(httpx.Client(timeout=10))
        on_first = stack.enter_context(subscribe(client, first, channel))

        with subscribe(other, second, channel) as on_second:
            ids = [publish(client, first, channel, f"m{n}") for n in range(3)]
            assert [event.id for event in on_first.take(3)] == ids
            assert [event.id for event in on_second.take(3)] == ids
            last_seen = on_second.last_id

        # The second subscriber is gone; two more messages, published on the second worker.
        missed = [publish(client, second, channel, f"m{n}") for n in range(3, 5)]
        assert [event.id for event in on_first.take(2)] == missed
        # It reconnects to the first worker with its last id: exactly what it missed.
        with subscribe(other, first, channel, last_id=last_seen) as resumed:
            assert [event.data for event in resumed.events] == ["m3", "m4"]
            assert [event.id for event in resumed.events] == missed
