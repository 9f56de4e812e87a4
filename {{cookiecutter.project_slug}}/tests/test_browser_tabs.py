"""The page in many tabs of one browser: one connection for all of them.

A browser opens at most six HTTP/1.1 connections per origin, and each open stream holds
one: a page with a stream per panel, in a tab each, runs out by the fourth tab. The page
has one stream (the demo counter and its channels, on GET /channels/events), and the tabs
of one profile (one Playwright context) share it through sse-client.js: one tab holds it,
the others hear it from that tab, and another takes over when it goes. The server is the
README's command (`uvicorn <package>.main:app`) in a child process. Each test saves a
screenshot of every tab's final state and prints the paths (`pytest -s`).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import browser
import pytest
from browser import (
    CHANNEL_OPEN,
    DEMO_DONE,
    GOES_LIVE_S,
    BrowserContext,
    Page,
    channel_messages,
    demo_messages,
    open_tabs,
    publish,
    roles,
    screenshots,
    wait_for_channel_messages,
)
from uvicorn_process import UvicornProcess, uvicorn_process

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile


def test_eight_tabs_hold_one_connection(
    browser_profile: Callable[..., BrowserContext],
    broker_settings: dict[str, object],
    tmp_path: Path,
):
    count, interval = 20, 0.4  # 8 s: every tab joins while the demo still runs
    settings = {"message_count": count, "message_interval": interval, **broker_settings}
    with uvicorn_process(tmp_path / "server.log", **settings) as server:
        url = f"http://127.0.0.1:{server.port}"
        context = browser_profile()
        streams_opened: list[str] = []
        context.on("request", lambda request: streams_opened.append(urlsplit(request.url).path))
        tabs = open_tabs(context, url + "/", 8)
        for tab in tabs:
            tab.wait_for_function(CHANNEL_OPEN)
        held = server.streams()
        assert not any(tab.evaluate(DEMO_DONE) for tab in tabs), "too slow: the demo ended"
        time.sleep(GOES_LIVE_S)
        text = f"to every tab {uuid.uuid4().hex[:8]}"
        publish(url, "lobby", [text])
        for tab in tabs:
            wait_for_channel_messages(tab, 1, timeout_s=10)
            tab.wait_for_function(DEMO_DONE, timeout=(count * interval + 10) * 1000)
        screenshots(tabs, tmp_path)

    assert held == 1, f"the server held {held} streams for 8 tabs, not one"
    for tab in tabs:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, count + 1)]
        assert channel_messages(tab) == [text]
    assert sorted(roles(tabs)) == ["follower"] * 7 + ["leader"]
    stream_paths = [path for path in streams_opened if "events" in path]
    assert stream_paths == ["/channels/events"], stream_paths


def test_closing_the_leader_tab_hands_the_stream_over_without_gap_or_duplicate(
    browser_profile: Callable[..., BrowserContext],
    broker_settings: dict[str, object],
    tmp_path: Path,
):
    count, interval, retry_s = 40, 0.25, 3.0  # 10 s: the leader goes mid-stream
    channel = f"takeover-{uuid.uuid4().hex[:12]}"
    sent = [f"published {n}" for n in range(1, 31)]
    settings = {"message_count": count, "message_interval": interval, **broker_settings}
    settings["retry_ms"] = int(retry_s * 1000)
    with uvicorn_process(tmp_path / "server.log", **settings) as server:
        url = f"http://127.0.0.1:{server.port}"
        context = browser_profile()
        opened: list[str] = []
        context.on("request", lambda request: opened.append(request.url))
        tabs = open_tabs(context, f"{url}/", 4)
        for tab in tabs:
            tab.fill("#channel-name", channel)
            # Enter, not a click on "Join": the growing demo list keeps moving the button,
            # and Playwright waits for a button to stand still before it clicks.
            tab.press("#channel-name", "Enter")
            tab.wait_for_function(CHANNEL_OPEN)
        leader, rest = tabs[0], tabs[1:]
        assert roles([leader]) == ["leader"]
        time.sleep(GOES_LIVE_S)
        # Messages go on being published while the leader tab goes and another takes over.
        publisher = threading.Thread(target=publish, args=(url, channel, sent, 0.1))
        publisher.start()
        wait_for_channel_messages(leader, 5, timeout_s=10)
        shown_by_leader = len(demo_messages(leader))
        leader.close()
        wait_for_new_leader(rest, timeout_s=retry_s * 2)
        # The demo still runs: the one stream the new leader holds carries it and the channel.
        during = settled_streams(server)
        demo_running = not any(tab.evaluate(DEMO_DONE) for tab in rest)
        for tab in rest:
            tab.wait_for_function(DEMO_DONE, timeout=(count * interval + 10) * 1000)
        publisher.join(30)
        for tab in rest:
            wait_for_channel_messages(tab, len(sent), timeout_s=10)
        tab.wait_for_timeout(500)  # time for a duplicate to show, had there been one
        held = server.streams()
        screenshots(rest, tmp_path)

    assert shown_by_leader < count - 4, "too slow: the demo was over before the leader went"
    assert demo_running, "too slow: the demo was over before another tab took over"
    assert during == 1, f"the server held {during} streams for the tabs after the takeover"
    # The new leader resumed the page's stream from the cursor the tabs had.
    page_streams = [urlsplit(u) for u in opened if urlsplit(u).path == "/channels/events"]
    resumed = [
        u for u in page_streams if f"channel={channel}" in u.query and "last_event_id=" in u.query
    ]
    assert len(resumed) == 1, [u.query for u in page_streams]
    for tab in rest:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, count + 1)]
        assert channel_messages(tab) == sent
        arrivals = tab.evaluate("window.arrivals")
        longest = max(later - earlier for earlier, later in itertools.pairwise(arrivals))
        assert longest < retry_s, f"the takeover left a {longest:.1f} s gap in the demo"
    assert sorted(roles(rest)) == ["follower", "follower", "leader"]
    assert held == 1, f"{held} streams open after the takeover, not the page's one"


def test_a_hung_leader_tab_is_taken_over_and_rejoins_without_gap_or_duplicate(
    browser_profile: Callable[..., BrowserContext],
    broker_settings: dict[str, object],
    tmp_path: Path,
):
    """A leader tab that stops answering (frozen, or busy) keeps its lock: it is stolen."""
    count, interval, takeover_s, hang_s = 30, 0.2, 3.0, 5
    settings = {"message_count": count, "message_interval": interval, **broker_settings}
    with uvicorn_process(tmp_path / "server.log", **settings) as server:
        context = browser_profile()
        tabs = open_tabs(context, f"http://127.0.0.1:{server.port}/", 3)
        leader, rest = tabs[0], tabs[1:]
        leader.wait_for_function("document.querySelectorAll('#messages li').length >= 6")
        assert roles([leader]) == ["leader"]
        # Headless Chromium does not freeze a page on request; a page whose script does
        # not return is as deaf: no events, no pings answered, and its lock still held.
        leader.evaluate(
            "seconds => setTimeout(() => {"
            " const end = performance.now() + seconds * 1000; while (performance.now() < end);"
            "})",
            hang_s,
        )
        for tab in rest:
            tab.wait_for_function(
                "document.getElementById('demo').dataset.role === 'leader' ||"
                " document.getElementById('demo').dataset.role === 'follower' &&"
                " document.querySelectorAll('#messages li').length >= 10",
                timeout=(hang_s + 5) * 1000,
            )
        for tab in tabs:
            tab.wait_for_function(DEMO_DONE, timeout=(count * interval + hang_s + 10) * 1000)
        held = server.streams()
        screenshots(tabs, tmp_path)

    for tab in tabs:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, count + 1)]
    for tab in rest:
        arrivals = tab.evaluate("window.arrivals")
        longest = max(later - earlier for earlier, later in itertools.pairwise(arrivals))
        # Found silent within a takeover delay, then a random wait of up to a quarter.
        assert longest < takeover_s * 1.5, f"the takeover left a {longest:.1f} s gap"
    assert sorted(roles(tabs)) == ["follower", "follower", "leader"]
    assert roles([leader]) == ["follower"], "the tab that hung kept the stream"
    assert held == 1, f"{held} streams open after the takeover, not the page's one"


def wait_for_new_leader(tabs: list[Page], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while "leader" not in roles(tabs):
        assert time.monotonic() < deadline, f"no tab took the stream over: {roles(tabs)}"
        time.sleep(0.05)


def settled_streams(server: UvicornProcess, settle_s: float = 3) -> int | None:
    """The streams the server holds, once the closed tab's connection is seen gone."""
    deadline = time.monotonic() + settle_s
    while (held := server.streams()) is None or held > 1:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return held
