"""The private panel in a real Chromium: the cookie path, expiry, renewal and resume.

The private channel rides on the page's one stream (GET /channels/events), shared by the
tabs that show the same channels; the tab that holds it renews the token (sse-client.js's
`renew` hook) and the stream resumes from its cursor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import browser
import httpx
import pytest
from browser import GOES_LIVE_S, BrowserContext, Page, open_tabs, roles, screenshots

from conftest import RunningServer
from sse_client import publish

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile
open_page = browser.open_page

SECRET = "a secret for the browser tests, 32 bytes or more"
# Every state the private panel's badge shows, in order.
PRIVATE_STATES = """
window.privateStates = [];
new MutationObserver((records) => {
  // Each change, even two in one task: the value after one is the old value of the next.
  const changes = records.filter((record) => record.target.id === "private-state");
  changes.forEach((record, index) => {
    const next = changes[index + 1];
    window.privateStates.push(next ? next.oldValue : record.target.dataset.state);
  });
}).observe(document, {
  subtree: true, attributes: true, attributeFilter: ["data-state"], attributeOldValue: true,
});
"""


def private_messages(page: Page) -> list[str]:
    return page.locator("#private-messages li.message").all_text_contents()


def test_without_the_demo_login_the_page_has_no_private_panel(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page]
):
    running = serve(auth_secret=SECRET)
    page = open_page(running.url + "/")
    page.wait_for_function("document.getElementById('channel-state').dataset.state === 'open'")
    assert page.locator("#private").count() == 0


def test_the_private_channel_renews_its_token_and_resumes_without_gap_in_shared_tabs(
    serve: Callable[..., RunningServer],
    browser_profile: Callable[..., BrowserContext],
    tmp_path: Path,
):
    # Tokens of 2 s (whole seconds: they expire 1-2 s after they are minted), and a
    # publisher for about 5 s: the stream ends for expiry at least twice meanwhile.
    running = serve(auth_secret=SECRET, demo_login=True, demo_token_ttl=2)
    name = f"alice-{uuid.uuid4().hex[:8]}"  # fresh: Redis outlives a test
    context = browser_profile()
    context.add_init_script(PRIVATE_STATES)
    requests: list[tuple[str, dict[str, str]]] = []
    context.on("request", lambda request: requests.append((request.url, request.all_headers())))
    # Two tabs signed in as one name show the same channels: they share one stream.
    tabs = open_tabs(context, running.url + "/", 2)
    for tab in tabs:
        tab.fill("#login-name", name)
        tab.click("#login-form button")
        tab.wait_for_function("document.getElementById('private-state').dataset.state === 'open'")
        assert tab.locator("#private-label").text_content() == f"user.{name}"
    tabs[0].wait_for_timeout(GOES_LIVE_S * 1000)
    assert sorted(roles(tabs)) == ["follower", "leader"]
    assert running_streams(running) == 1

    # The page itself can never read the token; the browser holds it for /channels/ only.
    assert "sse_token" not in tabs[0].evaluate("document.cookie")
    [cookie] = [c for c in context.cookies() if c["name"] == "sse_token"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Strict",
        "/channels/",
    )

    sent: list[str] = []
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sent.append(f"private {len(sent) + 1}")
            publish(client, running.url, f"user.{name}", sent[-1])
            time.sleep(0.2)
    for tab in tabs:
        tab.wait_for_function(
            f"document.querySelectorAll('#private-messages li.message').length >= {len(sent)}",
            timeout=15_000,
        )
    tabs[0].wait_for_timeout(500)  # time for a duplicate to show, had there been one
    screenshots(tabs, tmp_path)

    for tab in tabs:
        assert private_messages(tab) == sent  # every one, in order, none twice
        notices = tab.locator("#private-messages li.notice").all_text_contents()
        assert len(notices) >= 2 and all("expired" in notice for notice in notices), notices
        states = tab.evaluate("window.privateStates")
        # On a loaded machine a 2 s token may expire before its first stream connects:
        # that stream is refused and renewed before it is first open. Either way, at
        # least two renewals, and open at the end.
        assert "open" in states and states.count("renewing") >= 2, states
        assert states[-1] == "open", states
    logins = [url for url, _ in requests if urlsplit(url).path == "/demo/login"]
    assert len(logins) >= 4  # each tab's sign-in, then one per expiry (by the leader)
    streams = [
        (urlsplit(url), headers)
        for url, headers in requests
        if urlsplit(url).path == "/channels/events"
        and f"channel=user.{name}" in urlsplit(url).query
    ]
    # One stream for both tabs: the first, then one per renewal, each resuming after the
    # last id shown, with the cookie, never ?token=.
    assert all("token=" not in url.query for url, _ in streams)
    assert all("sse_token=" in headers.get("cookie", "") for _, headers in streams)
    assert len(streams) == 1 + sum("last_event_id=" in url.query for url, _ in streams)
    assert len(streams) >= 3, [url.query for url, _ in streams]


def running_streams(running: RunningServer, settle_s: float = 5) -> int:
    """The streams the server holds, once the ones the tabs left (the lobby's) are gone."""
    deadline = time.monotonic() + settle_s
    while True:
        streams = int(httpx.get(running.url + "/healthz", timeout=10).json()["streams"])
        if streams <= 1 or time.monotonic() > deadline:
            return streams
        time.sleep(0.1)


def test_another_name_cannot_read_the_channel_from_the_page(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page]
):
    running = serve(auth_secret=SECRET, demo_login=True)
    page = open_page(running.url + "/")
    page.fill("#login-name", "mallory")
    page.click("#login-form button")
    page.wait_for_function("document.getElementById('private-state').dataset.state === 'open'")
    # The page's own cookie, sent to someone else's channel.
    status = page.evaluate(
        "fetch('/channels/user.alice/events').then((response) => response.status)"
    )
    assert status == 403
