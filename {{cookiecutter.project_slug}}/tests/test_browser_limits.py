"""The page when the worker is full: it says so, tries again later, and loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import browser
import httpx
import pytest
from browser import Page, demo_messages, screenshot, wait_until_done

from conftest import RunningServer

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile
open_page = browser.open_page

COUNT = 3


def test_a_full_worker_is_retried_later_and_nothing_is_lost(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    # Both streams the worker allows are taken by channel subscribers, which stay open.
    running = serve(message_count=COUNT, message_interval=0.2, max_clients=2)
    with ExitStack() as holders, httpx.Client(timeout=10) as client:
        for _ in range(2):
            held = holders.enter_context(
                client.stream("GET", running.url + "/channels/full/events")
            )
            assert held.status_code == 200
        page = open_page(running.url + "/")
        page.wait_for_function("document.getElementById('demo-state').dataset.state == 'failed'")
        assert demo_messages(page) == []
    # The slots are free again: the page's own retry (after 2-4 s) gets the whole stream.
    wait_until_done(page, timeout_s=15)
    screenshot(page, tmp_path)
    assert demo_messages(page) == [f"Message {n}" for n in range(1, COUNT + 1)]
    states = page.evaluate("window.states")
    assert states[0] == "failed" and states[-2:] == ["open", "done"], states
