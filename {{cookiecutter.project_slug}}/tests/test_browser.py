"""The page in a real browser: Chromium, driven by Playwright, against a real server.

Chromium and the fixtures come from browser.py (without a browser these tests skip, or
fail in CI). Each test saves a screenshot of the page's final state and prints its path
(`pytest -s tests/test_browser.py` shows them).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import browser
import pytest
from browser import Page, demo_messages, screenshot, wait_until_done

from {{ cookiecutter.project_slug }} import demo
from {{ cookiecutter.project_slug }}.sse import encode_event

from conftest import RunningServer

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# The browser fixtures (the module skips, or fails in CI, without a browser).
chromium = browser.chromium
browser_profile = browser.browser_profile
open_page = browser.open_page
#: The page's one stream: the demo counter and the channel it shows.
PAGE_STREAM = "/channels/events?channel=lobby&demo=true"
shown_messages = demo_messages


def test_page_shows_every_message_in_order_then_done(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    count, interval = 5, 0.4
    running = serve(message_count=count, message_interval=interval)
    page = open_page(running.url + "/")
    wait_until_done(page, timeout_s=count * interval + 10)
    screenshot(page, tmp_path)

    assert shown_messages(page) == [f"Message {number}" for number in range(1, count + 1)]
    assert page.locator("#demo-received").text_content() == str(count)
    arrivals = page.evaluate("window.arrivals")
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(gaps) == count - 1
    assert all(interval * 0.5 <= gap <= interval * 1.5 for gap in gaps), gaps
    assert page.evaluate("window.states") == ["open", "done"]


def test_nothing_arrives_after_the_end(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    count, retry_ms = 3, 300
    running = serve(message_count=count, message_interval=0.1, retry_ms=retry_ms)
    stream_requests: list[str] = []
    page = open_page(running.url + "/")
    page.on("request", lambda request: stream_requests.append(request.url))
    wait_until_done(page, timeout_s=10)

    # Long enough for two reconnections, had anything (wrongly) started the demo again.
    page.wait_for_timeout(2 * retry_ms + 1000)
    screenshot(page, tmp_path)
    assert shown_messages(page) == [f"Message {number}" for number in range(1, count + 1)]
    assert page.locator("#demo-state").get_attribute("data-state") == "done"
    # The page's one stream stays open for the channel; it never opens the standalone demo.
    paths = [urlsplit(url).path for url in stream_requests]
    assert "/events" not in paths and paths.count("/channels/events") <= 1, paths


class Relay:
    """A TCP relay on loopback, between the browser and the server, that can cut the line.

    `cut()` closes every connection open through it (the browser sees its stream drop, as
    when a proxy restarts or Wi-Fi goes away) and keeps accepting new ones. While `refusal`
    is set, new connections get it as the answer instead, as from a proxy whose app is down.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusal: bytes | None = None
        self.port = 0
        self.requests = bytearray()  # everything the browser sent, to check its headers
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    def __enter__(self) -> Relay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._stop_now)
        self._thread.join(10)
        self._loop.close()

    def resumed_from(self, path: str) -> list[str]:
        """The Last-Event-ID of every GET request for `path` ("" when it had none)."""
        heads = [head.decode("latin-1") for head in bytes(self.requests).split(b"\r\n\r\n")]
        return [
            (re.findall(r"(?im)^last-event-id: *([^\r\n]*)", head) or [""])[0]
            for head in heads
            if head.startswith(f"GET {path} ")
        ]

    def cut(self) -> None:
        done = threading.Event()

        def close_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def _stop_now(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        if self._stop is not None:
            self._stop.set()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # Connections still open (the page's other streams) end with the relay.
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(
        self, browser_in: asyncio.StreamReader, browser_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(browser_in, browser_out)
        finally:
            self._tasks.discard(task)

    async def _serve(
        self, browser_in: asyncio.StreamReader, browser_out: asyncio.StreamWriter
    ) -> None:
        if self.refusal is not None:
            with suppress(ConnectionError, OSError):
                await browser_in.readuntil(b"\r\n\r\n")
                browser_out.write(self.refusal)
                await browser_out.drain()
            browser_out.transport.abort()
            return
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {browser_out, server_out}
        try:
            await asyncio.gather(
                self._pipe(browser_in, server_out, record=True),
                self._pipe(server_in, browser_out, record=False),
            )
        finally:
            for writer in (browser_out, server_out):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool
    ) -> None:
        with suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if record:
                    self.requests += chunk
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()  # one side gone: drop the other too, like a cut line


def test_a_dropped_connection_resumes_without_gap_or_duplicate(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    count, interval = 5, 0.6
    running = serve(message_count=count, message_interval=interval, retry_ms=300)
    with Relay(int(running.url.rsplit(":", 1)[1])) as relay:
        page = open_page(f"http://127.0.0.1:{relay.port}/")
        page.wait_for_function("document.querySelectorAll('#messages li').length >= 2")
        relay.cut()
        wait_until_done(page, timeout_s=count * interval + 10)
        screenshot(page, tmp_path)

    assert shown_messages(page) == [f"Message {number}" for number in range(1, count + 1)]
    ids = page.locator("#messages li").evaluate_all("items => items.map(i => i.dataset.id)")
    assert ids == [str(number) for number in range(1, count + 1)]
    states = page.evaluate("window.states")
    assert "reconnecting" in states and states[-1] == "done", states
    # The browser resumed from where it was cut, not from the start: the demo's part of
    # the stream's cursor (the last) says message 2.
    first, resumed = relay.resumed_from(PAGE_STREAM)
    assert first == "" and resumed.endswith(",0-2"), resumed


BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def test_a_refused_reconnect_shows_failed_then_retries_without_duplicates(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    """EventSource gives up on a 502: the page says "failed", not "done", and tries again."""
    count = 5
    running = serve(message_count=count, message_interval=0.4, retry_ms=300)
    with Relay(int(running.url.rsplit(":", 1)[1])) as relay:
        page = open_page(f"http://127.0.0.1:{relay.port}/")
        page.wait_for_function("document.querySelectorAll('#messages li').length >= 2")
        relay.refusal = BAD_GATEWAY
        relay.cut()
        page.wait_for_function(
            "document.getElementById('demo-state').dataset.state === 'failed'", timeout=10_000
        )
        assert shown_messages(page) == ["Message 1", "Message 2"]
        relay.refusal = None
        # The page's own retry (2-4 s later) is a new EventSource, which cannot send
        # Last-Event-ID: it asks to resume after message 2 in the query instead.
        wait_until_done(page, timeout_s=4 + count * 0.4 + 10)
        screenshot(page, tmp_path)
        resume = re.compile(rb"GET /channels/events\?channel=lobby&demo=true&last_event_id=\S+")
        retry = resume.search(relay.requests)
        assert retry and retry[0].endswith(b"%2C0-2"), "the retry did not resume after message 2"

    assert shown_messages(page) == [f"Message {number}" for number in range(1, count + 1)]
    states = page.evaluate("window.states")
    assert states[:3] == ["open", "reconnecting", "failed"], states
    assert states[-2:] == ["open", "done"], states


HOSTILE = [
    "<script>window.injected = 'script'</script>",
    '<img src="x" onerror="window.injected = \'img\'">',
    "</li><b onmouseover=alert(1)>bold?</b>",
]


def test_message_markup_is_shown_as_text_and_never_runs(
    serve: Callable[..., RunningServer],
    open_page: Callable[[str], Page],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # The demo's text is fixed; swap in messages that are markup.
    monkeypatch.setattr(
        demo, "demo_body", lambda number: encode_event(HOSTILE[number - 1], event=demo.DEMO)
    )
    running = serve(message_count=len(HOSTILE))
    page = open_page(running.url + "/")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    wait_until_done(page, timeout_s=10)
    page.wait_for_timeout(300)  # time for a broken image's onerror to fire, if there were one
    screenshot(page, tmp_path)

    assert shown_messages(page) == HOSTILE
    assert page.evaluate("window.injected") is None
    assert page.locator("#messages script, #messages img, #messages b").count() == 0
    assert dialogs == []


def test_published_markup_is_shown_as_text_and_never_runs(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    """The same through the channel panel: typed into the page, published, shown to all."""
    running = serve()
    page = open_page(running.url + "/")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.fill("#channel-name", f"xss-{uuid.uuid4().hex[:12]}")  # fresh: Redis outlives a test
    page.click("#channel-form button")
    page.wait_for_function(browser.CHANNEL_OPEN)
    page.wait_for_timeout(300)  # the subscription goes live just after the stream opens
    for number, text in enumerate(HOSTILE, start=1):
        page.fill("#publish-data", text)
        page.click("#publish-form button")
        page.wait_for_function(
            f"document.querySelectorAll('#channel-messages li').length >= {number}"
        )
    page.wait_for_timeout(300)
    screenshot(page, tmp_path)

    assert page.locator("#channel-messages li").all_text_contents() == HOSTILE
    assert page.evaluate("window.injected") is None
    assert page.locator("#channel-messages script, #channel-messages img").count() == 0
    assert page.locator("#channel-messages b").count() == 0
    assert dialogs == []


def test_a_message_typed_in_one_tab_arrives_in_both(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page], tmp_path: Path
):
    running = serve()
    channel = f"tabs-{uuid.uuid4().hex[:12]}"  # fresh: Redis outlives a test
    tabs = [open_page(running.url + "/") for _ in range(2)]
    for tab in tabs:
        tab.fill("#channel-name", channel)
        tab.click("#channel-form button")
        tab.wait_for_function("document.getElementById('channel-state').dataset.state === 'open'")
    tabs[0].wait_for_timeout(300)  # the subscriptions go live just after the streams open
    sent = ["typed in the first tab", "typed in the second tab"]
    for tab, text in zip(tabs, sent, strict=True):
        tab.fill("#publish-data", text)
        tab.click("#publish-form button")
        for each in tabs:
            each.wait_for_function(
                "text => [...document.querySelectorAll('#channel-messages li')]"
                ".some(item => item.textContent === text)",
                arg=text,
            )
    screenshot(tabs[1], tmp_path)
    for tab in tabs:
        assert tab.locator("#channel-messages li").all_text_contents() == sent
