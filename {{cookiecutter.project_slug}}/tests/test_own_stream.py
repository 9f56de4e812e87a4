"""The README's "Add your own stream" example, run as written, through a real server.

Its source awaits a queue, the obvious way; the stream must still end when the token
expires and when the server stops, though nothing is ever put in the queue.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from {{ cookiecutter.project_slug }}.auth import mint
from {{ cookiecutter.project_slug }}.main import create_app
from {{ cookiecutter.project_slug }}.routing import StreamingFastAPI
from {{ cookiecutter.project_slug }}.settings import Settings

import conftest
from conftest import RunningServer

README = Path(__file__).resolve().parent.parent / "README.md"
SECRET = "own-stream-test-secret-" + "s" * 32


def example(tmp_path: Path) -> ModuleType:
    """The section's Python block, imported as a module of its own."""
    section = README.read_text().split("## Add your own stream", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the README's example is gone"
    path = tmp_path / "notifications_example.py"
    path.write_text(code[1])
    spec = importlib.util.spec_from_file_location("notifications_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def running(serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RunningServer:
    notifications = example(tmp_path)

    def build(settings: Settings) -> StreamingFastAPI:
        app = create_app(settings)
        app.include_router(notifications.router)

        # Test-only routes, so that the queue and the hub are touched on the server's loop.
        @app.post("/test/notify/{user}")
        async def notify(user: str, text: str) -> None:
            notifications.inboxes[user].put_nowait(text)

        @app.post("/test/stop")
        async def stop() -> None:
            app.state.hub.close_all()

        return app

    monkeypatch.setattr(conftest, "create_app", build)
    return serve(auth_secret=SECRET, heartbeat_interval=60)


def token(sub: str, ttl: float = 60) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint(SECRET.encode(), sub, ttl=ttl, now=time.time())}


def read_until(lines, predicate: Callable[[str], bool]) -> list[str]:
    seen: list[str] = []
    for line in lines:
        seen.append(line)
        if predicate(line):
            break
    return seen


def test_the_stream_needs_a_token(running: RunningServer, client: httpx.Client):
    response = client.get(running.url + "/me/notifications")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_each_user_gets_their_own_notifications(running: RunningServer, client: httpx.Client):
    with client.stream("GET", running.url + "/me/notifications", headers=token("ann")) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        client.post(running.url + "/test/notify/bob", params={"text": "for bob"})
        client.post(running.url + "/test/notify/ann", params={"text": "for ann"})
        seen = read_until(lines, lambda line: line.startswith("data:"))
    assert seen[-2:] == ["event: notification", "data: for ann"]


def test_the_stream_ends_when_its_token_expires(running: RunningServer, client: httpx.Client):
    started = time.monotonic()
    headers = token("ann", ttl=2)
    with client.stream("GET", running.url + "/me/notifications", headers=headers) as r:
        lines = list(r.iter_lines())  # the source waits on an empty queue all along
    assert "event: token-expired" in lines
    assert time.monotonic() - started < 5


def test_the_stream_ends_when_the_server_stops(running: RunningServer, client: httpx.Client):
    with client.stream("GET", running.url + "/me/notifications", headers=token("ann")) as r:
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while client.get(running.url + "/healthz").json()["streams"] != 1:
            assert time.monotonic() < deadline, "the stream never opened"
            time.sleep(0.02)
        stopped = time.monotonic()
        client.post(running.url + "/test/stop")
        rest = list(r.iter_lines())  # ends only if the source, in inbox.get(), is interrupted
    assert time.monotonic() - stopped < 2
    assert rest[0].startswith("retry:")
    assert not [line for line in rest if line.startswith("data:")]
