"""static/sse-client.js on its own, in a real Chromium: what a user's own page relies on.

Each test opens a page of the app that runs no script of its own (/healthz) and imports
the module there, as a user's page would.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import browser
import httpx
import pytest
from browser import Page, screenshot

from {{ cookiecutter.project_slug }} import main
from {{ cookiecutter.project_slug }}.auth import mint
from {{ cookiecutter.project_slug }}.demo import END
from {{ cookiecutter.project_slug }}.sse import encode_event

from conftest import RunningServer
from sse_client import publish

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile
open_page = browser.open_page

# Subscribes with every handler recording into window.got, and states into window.seen.
SUBSCRIBE = """
async ([url, options]) => {
  const { subscribe } = await import("/static/sse-client.js");
  window.got = [];
  window.seen = [];
  window.renewals = 0;
  const record = (event) => window.got.push([event.type, event.id, event.data]);
  window.subscription = subscribe(url, { message: record, end: record, "token-expired": record,
    "price.update": record }, {
    ...options,
    renew: options.renew ? async () => { window.renewals += 1; return options.renew; } : null,
    onState: (state, role) => window.seen.push([state, role]),
  });
}
"""
CLOSED = "window.seen.length && window.seen[window.seen.length - 1][0] === 'closed'"


def module_page(open_page: Callable[[str], Page], running: RunningServer) -> Page:
    return open_page(running.url + "/healthz")


def test_named_events_and_ids_arrive_and_end_closes_the_stream(
    serve: Callable[..., RunningServer],
    open_page: Callable[[str], Page],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    async def priced(stream: object, **_: object) -> AsyncIterator[bytes]:
        yield encode_event("first", id="1")
        yield encode_event('{"price": 2}', id="2", event="price.update")
        yield END

    monkeypatch.setattr(main, "count_messages", priced)
    page = module_page(open_page, serve(message_count=2))
    page.evaluate(SUBSCRIBE, ["/events", {}])
    page.wait_for_function(CLOSED)
    screenshot(page, tmp_path)

    assert page.evaluate("window.got") == [
        ["message", "1", "first"],
        ["price.update", "2", '{"price": 2}'],
        ["end", "2", ""],  # lastEventId carries over to an event without its own id
    ]
    # onState also hears role changes (waiting, then leader): the states, once each.
    states = [state for state, _ in itertools.groupby(s for s, _ in page.evaluate("window.seen"))]
    assert states == ["connecting", "open", "closed"]
    assert page.evaluate("window.subscription.lastEventId") == "2"


def test_token_expired_renews_then_resumes_after_the_last_id(
    serve: Callable[..., RunningServer],
    open_page: Callable[[str], Page],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    async def expiring(stream: object, *, after: int, **_: object) -> AsyncIterator[bytes]:
        if after == 0:
            yield encode_event("Message 1", id="1")
            yield encode_event("Message 2", id="2")
            yield encode_event("", event="token-expired")
            return  # what EventSource would retry by itself, with the old token
        yield encode_event("Message 3", id="3")
        yield END

    monkeypatch.setattr(main, "count_messages", expiring)
    page = module_page(open_page, serve(message_count=3, retry_ms=100))
    opened: list[str] = []
    page.on("request", lambda request: opened.append(request.url))
    # renew() returns the URL to go on from: a fresh token in the query string.
    page.evaluate(SUBSCRIBE, ["/events", {"renew": "/events?token=fresh"}])
    page.wait_for_function(CLOSED)
    screenshot(page, tmp_path)

    assert [data for _, _, data in page.evaluate("window.got")] == [
        "Message 1",
        "Message 2",
        "",
        "Message 3",
        "",
    ]
    assert page.evaluate("window.renewals") == 1
    streams = [urlsplit(url) for url in opened if urlsplit(url).path == "/events"]
    assert [stream.query for stream in streams] == ["", "token=fresh&last_event_id=2"]


def test_token_expired_without_renew_closes_for_good(
    serve: Callable[..., RunningServer],
    open_page: Callable[[str], Page],
    monkeypatch: pytest.MonkeyPatch,
):
    async def expiring(stream: object, **_: object) -> AsyncIterator[bytes]:
        yield encode_event("Message 1", id="1")
        yield encode_event("", event="token-expired")

    monkeypatch.setattr(main, "count_messages", expiring)
    page = module_page(open_page, serve(message_count=3, retry_ms=100))
    opened: list[str] = []
    page.on("request", lambda request: opened.append(urlsplit(request.url).path))
    page.evaluate(SUBSCRIBE, ["/events", {}])
    page.wait_for_function(CLOSED)
    page.wait_for_timeout(500)  # several retry delays: EventSource must not come back
    assert opened.count("/events") == 1


def test_without_web_locks_each_tab_holds_its_own_stream(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page]
):
    page = module_page(open_page, serve(message_count=2, message_interval=0.1))
    page.evaluate("delete Navigator.prototype.locks")
    page.evaluate(SUBSCRIBE, ["/events", {}])
    page.wait_for_function(CLOSED)
    assert {role for _, role in page.evaluate("window.seen")} == {"solo"}
    assert [data for _, _, data in page.evaluate("window.got")] == ["Message 1", "Message 2", ""]


def test_a_refused_stream_renews_before_it_is_tried_again(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    """A 401 (a token that expired while the stream was down) is answered by renew()."""
    secret = "a secret for the browser tests, 32 bytes or more"
    running = serve(auth_secret=secret)
    now = time.time()
    stale = mint(secret.encode(), "bob", ttl=10, now=now - 60)
    fresh = mint(secret.encode(), "bob", ttl=60, now=now)
    page = module_page(open_page, running)
    opened: list[str] = []
    page.on("request", lambda request: opened.append(request.url))
    channel = "/channels/user.bob/events"
    page.evaluate(SUBSCRIBE, [f"{channel}?token={stale}", {"renew": f"{channel}?token={fresh}"}])
    # Refused with 401, then (2-4 s later) renewed and opened with the fresh token.
    page.wait_for_function(
        "window.seen.length && window.seen[window.seen.length - 1][0] === 'open'",
        timeout=10_000,
    )
    page.wait_for_timeout(300)  # the subscription goes live just after the stream opens
    with httpx.Client(timeout=10) as client:
        publish(client, running.url, "user.bob", "after the renewal")
    page.wait_for_function("window.got.length >= 1")
    screenshot(page, tmp_path)

    assert [state for state, _ in page.evaluate("window.seen")].count("failed") == 1
    assert page.evaluate("window.renewals") == 1
    [(event, event_id, data)] = page.evaluate("window.got")
    assert (event, data) == ("message", "after the renewal") and re.fullmatch(r"\d+-\d+", event_id)
    tokens = [parse_qs(urlsplit(url).query)["token"] for url in opened if channel in url]
    assert tokens == [[stale], [fresh]]
