"""What the browser tests share: Chromium, browser profiles, tabs, and reading the page.

Chromium is looked up in $SSE_TEST_CHROMIUM, then the usual system paths, then
Playwright's own download (`playwright install chromium`). Without one, a module that
imports this one skips, unless SSE_REQUIRE_BROWSER=1 (as in CI), which turns a missing
browser into a failure. A test module takes the fixtures by name
(`chromium = browser.chromium`) and saves screenshots of its final state with
`screenshot` or `screenshots`, which print their paths (`pytest -s` shows them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

try:
    from playwright.sync_api import BrowserContext, BrowserType, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the skip (or failure) below says what to install
    sync_playwright = None

__all__ = ["BrowserContext", "BrowserType", "Page", "PlaywrightError"]

SYSTEM_CHROMIUMS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL_HINT = (
    "no Chromium for the browser tests: install it (apt install chromium, or "
    "`playwright install chromium`) or set SSE_TEST_CHROMIUM to its path"
)
# Headless, and quiet: no sandbox (containers, root in CI), and none of the background
# traffic (updates, sync, field trials) a browser starts on its own. Background tabs run
# their timers and rendering as the front one does: headless Chromium otherwise
# throttles them, and a test would measure the throttling, not the page.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-gpu",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
# Runs in every tab before the page's own script: records when each demo message appears
# and every state the demo's badge shows, so the tests see what the user saw, not only
# the end result.
RECORDER = """
window.arrivals = [];
window.states = [];
new MutationObserver((records) => {
  for (const record of records) {
    if (record.type === "attributes" && record.target.id === "demo-state") {
      window.states.push(record.target.dataset.state);
    }
    for (const node of record.addedNodes) {
      if (node.nodeName === "LI" && node.parentNode && node.parentNode.id === "messages") {
        window.arrivals.push(performance.now() / 1000);
      }
    }
  }
}).observe(document, {
  childList: true, subtree: true, attributes: true, attributeFilter: ["data-state"],
});
"""
DEMO_DONE = "document.getElementById('demo-state').dataset.state === 'done'"
CHANNEL_OPEN = "document.getElementById('channel-state').dataset.state === 'open'"
# A subscription goes live a moment after its stream opens (the `: live` comment, which the
# page does not see); a message published before that would not reach it.
GOES_LIVE_S = 0.5


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("SSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SSE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # one line for the module, not one per test


def find_chromium() -> str | None:
    """The browser's path, or None for Playwright's own; skips the module without one."""
    if sync_playwright is None:
        unavailable("Playwright is missing: pip install -e '.[test]'")
    configured = os.environ.get("SSE_TEST_CHROMIUM")
    if configured:
        if not (shutil.which(configured) or Path(configured).is_file()):
            unavailable(f"SSE_TEST_CHROMIUM={configured!r} is not an executable")
        return configured
    system = next((path for path in SYSTEM_CHROMIUMS if os.access(path, os.X_OK)), None)
    if system is not None:
        return system
    with sync_playwright() as playwright:
        if Path(playwright.chromium.executable_path).exists():
            return None
    unavailable(INSTALL_HINT)


CHROMIUM = find_chromium()


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserType]:
    with sync_playwright() as playwright:
        yield playwright.chromium


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
            args=CHROMIUM_ARGS,
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


@pytest.fixture
def open_page(browser_profile: Callable[..., BrowserContext]) -> Callable[[str], Page]:
    """`open_page(url)`: a fresh browser profile showing `url` in its one tab."""
    return lambda url: open_tabs(browser_profile(), url, 1)[0]


def open_tabs(context: BrowserContext, url: str, count: int, **goto: Any) -> list[Page]:
    tabs: list[Page] = []
    for _ in range(count):
        # The profile starts with one blank tab: use it first.
        blank = [page for page in context.pages if page.url == "about:blank"]
        page = blank[0] if blank else context.new_page()
        page.goto(url, **goto)
        tabs.append(page)
    return tabs


def screenshot(page: Page, tmp_path: Path) -> Path:
    path = tmp_path / "final-page.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot of the final page: {path}")
    return path


def screenshots(tabs: list[Page], tmp_path: Path) -> list[Path]:
    paths = []
    for number, tab in enumerate(tabs, start=1):
        tab.bring_to_front()
        path = tmp_path / f"tab-{number}.png"
        tab.screenshot(path=path, full_page=True)
        paths.append(path)
    print("screenshots of the tabs' final state:", *paths, sep="\n  ")
    return paths


def wait_until_done(page: Page, timeout_s: float) -> None:
    page.wait_for_function(DEMO_DONE, timeout=timeout_s * 1000)


def wait_for_channel_messages(tab: Page, count: int, timeout_s: float) -> None:
    tab.wait_for_function(
        f"document.querySelectorAll('#channel-messages li').length >= {count}",
        timeout=timeout_s * 1000,
    )


def demo_messages(tab: Page) -> list[str]:
    return tab.locator("#messages li").all_text_contents()


def channel_messages(tab: Page) -> list[str]:
    return tab.locator("#channel-messages li").all_text_contents()


def roles(tabs: list[Page]) -> list[str | None]:
    """Which tab holds the page's stream: leader, follower or solo (every panel says)."""
    return [tab.get_attribute("#demo", "data-role") for tab in tabs]


def publish(url: str, channel: str, texts: list[str], every_s: float = 0) -> None:
    with httpx.Client(timeout=10, verify=False) as client:
        for text in texts:
            response = client.post(f"{url}/channels/{channel}/messages", json={"data": text})
            assert response.status_code == 201, response.text
            time.sleep(every_s)
