"""The private panel in a real Chromium: the cookie path, expiry, renewal and resume."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import browser
import httpx
from browser import Page, screenshot

from conftest import RunningServer
from sse_client import publish

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile
open_page = browser.open_page

SECRET = "a secret for the browser tests, 32 bytes or more"
# Every state the private panel's badge shows, in order.
PRIVATE_STATES = """
window.privateStates = [];
new MutationObserver((records) => {
  for (const record of records) {
    const badge = record.target;
    if (badge.id === "private-state") window.privateStates.push(badge.dataset.state);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
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


def test_the_private_channel_renews_its_token_and_resumes_without_gap(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    # Tokens of 2 s (whole seconds: they expire 1-2 s after they are minted), and a
    # publisher for about 5 s: the stream ends for expiry at least twice meanwhile.
    running = serve(auth_secret=SECRET, demo_login=True, demo_token_ttl=2)
    name = f"alice-{uuid.uuid4().hex[:8]}"  # fresh: Redis outlives a test
    page = open_page(running.url + "/")
    page.add_init_script(PRIVATE_STATES)
    page.reload()
    requests: list[tuple[str, dict[str, str]]] = []
    page.on("request", lambda request: requests.append((request.url, request.all_headers())))

    page.fill("#login-name", name)
    page.click("#login-form button")
    page.wait_for_function("document.getElementById('private-state').dataset.state === 'open'")
    page.wait_for_timeout(300)  # the subscription goes live just after the stream opens
    assert page.locator("#private-label").text_content() == f"user.{name}"

    # The page itself can never read the token; the browser holds it for /channels/ only.
    assert "sse_token" not in page.evaluate("document.cookie")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "sse_token"]
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
    page.wait_for_function(
        f"document.querySelectorAll('#private-messages li.message').length >= {len(sent)}",
        timeout=15_000,
    )
    page.wait_for_timeout(500)  # time for a duplicate to show, had there been one
    screenshot(page, tmp_path)

    assert private_messages(page) == sent  # every one, in order, none twice
    notices = page.locator("#private-messages li.notice").all_text_contents()
    assert len(notices) >= 2 and all("expired" in notice for notice in notices), notices
    states = page.evaluate("window.privateStates")
    assert states[:1] == ["open"] and states.count("renewing") >= 2, states
    logins = [url for url, _ in requests if urlsplit(url).path == "/demo/login"]
    assert len(logins) >= 3  # the first sign-in, then one per expiry
    streams = [
        (url, headers)
        for url, headers in requests
        if urlsplit(url).path == f"/channels/user.{name}/events"
    ]
    # Each renewed stream resumed after the last id shown, with the cookie, never ?token=.
    assert all("token=" not in url for url, _ in streams)
    assert all("sse_token=" in headers.get("cookie", "") for _, headers in streams)
    assert sum("last_event_id=" in url for url, _ in streams) >= 2


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
