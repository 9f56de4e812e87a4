"""Many tabs, each with its own streams (sharing off), through nginx: HTTP/2 carries them all.

Over HTTP/1.1 a browser holds at most six connections per origin, and each open stream
takes one. deploy/nginx.conf serves HTTP/2 over TLS, where every stream of the browser
shares one connection: 12 tabs with a stream each all stream. nginx runs with a
throwaway self-signed certificate (test_nginx.py); only this browser accepts it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import browser
import pytest
import test_nginx
from browser import (
    CHANNEL_OPEN,
    DEMO_DONE,
    GOES_LIVE_S,
    BrowserContext,
    Page,
    PlaywrightError,
    channel_messages,
    demo_messages,
    open_tabs,
    publish,
    roles,
    screenshots,
    wait_for_channel_messages,
)

from conftest import RunningServer

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser's and nginx's fixtures (each module skips, or fails in CI, without its tool).
chromium = browser.chromium
browser_profile = browser.browser_profile
certificate = test_nginx.certificate
proxy = test_nginx.proxy

TABS = 12
COUNT, INTERVAL = 5, 0.4
NOT_SHARED = "/?share=off"  # each tab opens its own stream, as without sharing


def test_twelve_tabs_without_sharing_all_stream_over_http2_through_nginx(
    serve: Callable[..., RunningServer],
    proxy: Callable[..., str],
    browser_profile: Callable[..., BrowserContext],
    tmp_path: Path,
):
    url = proxy(serve(message_count=COUNT, message_interval=INTERVAL), scheme="https")
    context = browser_profile(ignore_https_errors=True)
    tabs = open_tabs(context, url + NOT_SHARED, TABS)
    for tab in tabs:
        tab.wait_for_function(CHANNEL_OPEN)
    time.sleep(GOES_LIVE_S)
    text = f"over HTTP/2 {uuid.uuid4().hex[:8]}"
    publish(url, "lobby", [text])
    for tab in tabs:
        wait_for_channel_messages(tab, 1, timeout_s=10)
        tab.wait_for_function(DEMO_DONE, timeout=(COUNT * INTERVAL + 10) * 1000)
    screenshots(tabs, tmp_path)

    protocols = {tab.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")}
    assert protocols == {"h2"}
    assert roles(tabs) == ["solo"] * TABS
    for tab in tabs:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, COUNT + 1)]
        assert channel_messages(tab) == [text]


def test_over_http1_tabs_past_six_connections_wait(
    serve: Callable[..., RunningServer],
    proxy: Callable[..., str],
    browser_profile: Callable[..., BrowserContext],
    tmp_path: Path,
):
    """The control for the test above: the same tabs through nginx's plain HTTP/1.1 side."""
    url = proxy(serve(message_count=COUNT, message_interval=INTERVAL))
    context = browser_profile()
    # Later tabs cannot even load the page while six streams hold every connection: start
    # each navigation without waiting for it.
    tabs = [context.new_page() for _ in range(TABS)]
    for tab in tabs:
        tab.evaluate("url => { location.href = url; }", url + NOT_SHARED)
    tabs[0].wait_for_timeout((COUNT * INTERVAL + 2) * 1000)  # long enough for every demo
    # A tab still waiting for a connection to load the page at all has not streamed;
    # asked anything, it would answer only once the page loads: never, as the page's
    # stream stays open (it carries the channels after the demo).
    loaded = [tab for tab in tabs if tab.url.startswith(url)]
    done = sum(demo_done(tab) for tab in loaded)
    screenshots(loaded, tmp_path)
    assert done < TABS, "every tab streamed over HTTP/1.1: the test above proves nothing"


def demo_done(tab: Page) -> bool:
    try:
        return tab.evaluate(f"Boolean(document.getElementById('demo-state')) && {DEMO_DONE}")
    except PlaywrightError:  # the page is still loading: it has not streamed
        return False
