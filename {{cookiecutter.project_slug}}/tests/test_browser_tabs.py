"""The page in many tabs of one browser: one connection per stream, whatever the tabs.

A browser opens at most six HTTP/1.1 connections per origin, and each of the page's two
panels holds a stream: without sharing, the fourth tab would wait for ever. The tabs of
one profile (one Playwright context) share each stream through sse-client.js: one tab holds
it, the others hear it from that tab, and another takes over when it goes. The server is
the README's command (`uvicorn <package>.main:app`) in a child process. Each test saves a
screenshot of every tab's final state and prints the paths (`pytest -s`).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import test_browser
from test_browser import CHROMIUM, CHROMIUM_ARGS, RECORDER, BrowserContext, BrowserType, Page
from uvicorn_process import uvicorn_process

# The browser fixture (the module skips, or fails in CI, without a browser).
chromium = test_browser.chromium

# Background tabs run their timers and rendering as the front one does: headless Chromium
# otherwise throttles them, and a test would measure the throttling, not the page.
TAB_ARGS = [
    *CHROMIUM_ARGS,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
DEMO_DONE = "document.getElementById('demo-state').dataset.state === 'done'"
CHANNEL_OPEN = "document.getElementById('channel-state').dataset.state === 'open'"
# A subscription goes live a moment after its stream opens (the `: live` comment, which the
# page does not see); a message published before that would not reach it.
GOES_LIVE_S = 0.5


@pytest.fixture
def browser_profile(
    chromium: BrowserType, tmp_path: Path
) -> Iterator[Callable[..., BrowserContext]]:
    """`browser_profile(**options)`: one browser profile; its pages are tabs of one browser."""
    contexts: list[BrowserContext] = []

    def launch(**options: Any) -> BrowserContext:
        context = chromium.launch_persistent_context(
            tmp_path / f"profile-{len(contexts)}",
            executable_path=CHROMIUM,
            headless=True,
            args=TAB_ARGS,
            viewport={"width": 800, "height": 900},
            **options,
        )
        contexts.append(context)
        context.set_default_timeout(20_000)
        context.add_init_script(RECORDER)
        return context

    yield launch
    for context in contexts:
        context.close()


def open_tabs(context: BrowserContext, url: str, count: int, **goto: Any) -> list[Page]:
    tabs: list[Page] = []
    for _ in range(count):
        # The profile starts with one blank tab: use it first.
        blank = [page for page in context.pages if page.url == "about:blank"]
        page = blank[0] if blank else context.new_page()
        page.goto(url, **goto)
        tabs.append(page)
    return tabs


def screenshots(tabs: list[Page], tmp_path: Path) -> list[Path]:
    paths = []
    for number, tab in enumerate(tabs, start=1):
        tab.bring_to_front()
        path = tmp_path / f"tab-{number}.png"
        tab.screenshot(path=path, full_page=True)
        paths.append(path)
    print("screenshots of the tabs' final state:", *paths, sep="\n  ")
    return paths


def demo_messages(tab: Page) -> list[str]:
    return tab.locator("#messages li").all_text_contents()


def channel_messages(tab: Page) -> list[str]:
    return tab.locator("#channel-messages li").all_text_contents()


def roles(tabs: list[Page], panel: str) -> list[str | None]:
    return [tab.get_attribute(f"#{panel}", "data-role") for tab in tabs]


def wait_for_channel_messages(tab: Page, count: int, timeout_s: float) -> None:
    tab.wait_for_function(
        f"document.querySelectorAll('#channel-messages li').length >= {count}",
        timeout=timeout_s * 1000,
    )


def publish(url: str, channel: str, texts: list[str], every_s: float = 0) -> None:
    with httpx.Client(timeout=10, verify=False) as client:
        for text in texts:
            response = client.post(f"{url}/channels/{channel}/messages", json={"data": text})
            assert response.status_code == 201, response.text
            time.sleep(every_s)


def test_eight_tabs_hold_one_connection_per_stream(
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

    assert held == 2, f"the server held {held} streams for 8 tabs, not one per stream"
    for tab in tabs:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, count + 1)]
        assert channel_messages(tab) == [text]
    assert sorted(roles(tabs, "demo")) == ["follower"] * 7 + ["leader"]
    assert sorted(roles(tabs, "channel")) == ["follower"] * 7 + ["leader"]
    assert streams_opened.count("/events") == 1
    assert streams_opened.count("/channels/lobby/events") == 1


def test_closing_the_leader_tab_hands_both_streams_over_without_gap_or_duplicate(
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
        tabs = open_tabs(context, f"{url}/", 4)
        for tab in tabs:
            tab.fill("#channel-name", channel)
            # Enter, not a click on "Join": the growing demo list keeps moving the button,
            # and Playwright waits for a button to stand still before it clicks.
            tab.press("#channel-name", "Enter")
            tab.wait_for_function(CHANNEL_OPEN)
        leader, rest = tabs[0], tabs[1:]
        assert roles([leader], "demo") == roles([leader], "channel") == ["leader"]
        time.sleep(GOES_LIVE_S)
        # Messages go on being published while the leader tab goes and another takes over.
        publisher = threading.Thread(target=publish, args=(url, channel, sent, 0.1))
        publisher.start()
        wait_for_channel_messages(leader, 5, timeout_s=10)
        shown_by_leader = len(demo_messages(leader))
        leader.close()
        for tab in rest:
            tab.wait_for_function(DEMO_DONE, timeout=(count * interval + 10) * 1000)
        publisher.join(30)
        for tab in rest:
            wait_for_channel_messages(tab, len(sent), timeout_s=10)
        tab.wait_for_timeout(500)  # time for a duplicate to show, had there been one
        held = server.streams()
        screenshots(rest, tmp_path)

    assert shown_by_leader < count - 4, "too slow: the demo was over before the leader went"
    for tab in rest:
        assert demo_messages(tab) == [f"Message {n}" for n in range(1, count + 1)]
        assert channel_messages(tab) == sent
        arrivals = tab.evaluate("window.arrivals")
        longest = max(later - earlier for earlier, later in itertools.pairwise(arrivals))
        assert longest < retry_s, f"the takeover left a {longest:.1f} s gap in the demo"
    assert sorted(roles(rest, "demo")) == ["follower", "follower", "leader"]
    assert sorted(roles(rest, "channel")) == ["follower", "follower", "leader"]
    assert held == 1, f"{held} streams open after the demo ended, not the one channel stream"


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
        assert roles([leader], "demo") == ["leader"]
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
    assert sorted(roles(tabs, "demo")) == ["follower", "follower", "leader"]
    assert roles([leader], "demo") == ["follower"], "the tab that hung kept the stream"
    assert held == 1, f"{held} streams open after the demo ended, not the channel's one"
