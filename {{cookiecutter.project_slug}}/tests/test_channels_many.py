"""GET /channels/events?channel=a&channel=b: several channels on one stream, over HTTP.

The broker-level guarantees (exactly once per channel under a lagging reader) are in
test_broker_contract.py; these check the route: its answers, its ids, its authorization.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx
import pytest

from {{ cookiecutter.project_slug }}.auth import mint

from conftest import RunningServer
from sse_client import Subscription, live_stream, new_channel, publish

SECRET = "many-channels-test-secret-" + "m" * 32


@contextmanager
def subscribe_many(
    client: httpx.Client,
    url: str,
    channels: list[str],
    last_id: str | None = None,
    headers: dict[str, str] | None = None,
    demo: bool = False,
) -> Iterator[Subscription]:
    """The stream of `channels`, returned once it is live (its `: live` comment)."""
    headers = dict(headers or {})
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    query = urlencode([("channel", channel) for channel in channels] + [("demo", "true")] * demo)
    with live_stream(client, f"{url}/channels/events?{query}", headers) as subscription:
        yield subscription


@pytest.fixture
def running(serve) -> RunningServer:
    return serve(auth_secret=SECRET)


def test_one_stream_carries_every_channel_named_by_it(running: RunningServer, client: httpx.Client):
    a, b, other = new_channel(), new_channel(), new_channel()
    with subscribe_many(client, running.url, [a, b]) as stream:
        publish(client, running.url, a, "to a")
        publish(client, running.url, other, "to neither")
        publish(client, running.url, b, "to b", event="price")
        got = stream.take(2)
    assert [(event.event, event.data) for event in got] == [(a, "to a"), (f"{b}:price", "to b")]
    # Every id is a cursor: one position per channel, in the order they were named.
    assert all(event.id is not None and len(event.id.split(",")) == 2 for event in got)


def test_a_resume_from_the_last_id_misses_and_repeats_nothing(
    running: RunningServer, client: httpx.Client
):
    a, b = new_channel(), new_channel()
    with subscribe_many(client, running.url, [a, b]) as stream:
        publish(client, running.url, a, "a1")
        publish(client, running.url, b, "b1")
        stream.take(2)
        last = stream.last_id
    assert last is not None
    # Published while the client was away, on both channels.
    publish(client, running.url, b, "b2")
    publish(client, running.url, a, "a2")
    with subscribe_many(client, running.url, [a, b], last_id=last) as resumed:
        publish(client, running.url, a, "a3")
        missed = list(resumed.events)  # the replay, before anything live
        live = resumed.take(1)
    assert sorted(event.data for event in missed) == ["a2", "b2"]
    assert [event.data for event in live] == ["a3"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "name 1 to 16 channels"),
        ("channel=a&channel=a", "only once"),
        ("channel=no%20spaces", "channel must be"),
        ("&".join(f"channel=c{n}" for n in range(17)), "name 1 to 16 channels"),
        ("channel=a&channel=end", "no channel may be named end"),
        ("channel=reset", "no channel may be named reset"),
    ],
    ids=["none", "twice", "bad-name", "too-many", "named-end", "named-reset"],
)
def test_a_bad_list_of_channels_gets_400_with_a_reason(
    running: RunningServer, client: httpx.Client, query: str, reason: str
):
    response = client.get(f"{running.url}/channels/events?{query}")
    if query == "":
        # No channel at all is FastAPI's own answer for a missing required parameter.
        assert response.status_code == 422
        return
    assert response.status_code == 400
    assert reason in response.json()["detail"]


@pytest.mark.parametrize("cursor", ["1-1", "1-1,2-2,3-3", "x", "1-1,zzzzzzzzzzzzzz-1"])
def test_a_cursor_that_does_not_fit_gets_400(
    running: RunningServer, client: httpx.Client, cursor: str
):
    query = urlencode([("channel", "a"), ("channel", "b")])
    response = client.get(
        f"{running.url}/channels/events?{query}", headers={"Last-Event-ID": cursor}
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


def test_every_protected_channel_must_be_granted(running: RunningServer, client: httpx.Client):
    public = new_channel()
    query = urlencode([("channel", public), ("channel", "user.ann")])
    url = f"{running.url}/channels/events?{query}"
    assert client.get(url).status_code == 401
    bob = mint(SECRET.encode(), "bob", ttl=60, now=time.time())
    assert client.get(url, headers={"Authorization": f"Bearer {bob}"}).status_code == 403
    ann = {"Authorization": "Bearer " + mint(SECRET.encode(), "ann", ttl=60, now=time.time())}
    with subscribe_many(client, running.url, [public, "user.ann"], headers=ann) as stream:
        publish(client, running.url, "user.ann", "for ann")
        assert [event.data for event in stream.take(1)] == ["for ann"]


def until_demo_end(stream: Subscription) -> list[tuple[str, str]]:
    """(event, data) of every event up to and with `demo:end`."""
    got: list[tuple[str, str]] = []
    while not got or got[-1][0] != "demo:end":
        event = stream.next_event()
        assert event is not None, f"the stream ended before demo:end: {got}"
        got.append((event.event, event.data))
    return got


def test_the_demo_rides_on_the_stream_and_resumes_from_its_cursor(serve, client: httpx.Client):
    """demo=true: the page's stream. Message 1..count among the channel's messages, each
    id the whole cursor; a resume goes on after the last message it has, on both."""
    running = serve(message_count=3, message_interval=0.5)
    channel = new_channel()
    with subscribe_many(client, running.url, [channel], demo=True) as stream:
        [first] = stream.take(1)  # Message 1, at once
        publish(client, running.url, channel, "between 1 and 2")
        rest = until_demo_end(stream)
        ids = [event.id for event in stream.events if event.id is not None]
    assert (first.event, first.data) == ("demo", "Message 1")
    assert rest == [
        (channel, "between 1 and 2"),
        ("demo", "Message 2"),
        ("demo", "Message 3"),
        ("demo:end", ""),
    ]
    # Two parts: the channel's position, then the demo's (0-<number in base 36>).
    assert [event_id.split(",")[1] for event_id in ids] == ["0-1", "0-1", "0-2", "0-3"]

    # Resumed after Message 1: what came after it, the channel's message from history.
    with subscribe_many(client, running.url, [channel], last_id=first.id, demo=True) as again:
        assert [(event.event, event.data) for event in again.events] == rest[:1]
        assert until_demo_end(again) == rest[1:]
    # Resumed after the last message: only the end, then the channel goes on.
    with subscribe_many(client, running.url, [channel], last_id=ids[-1], demo=True) as done:
        assert until_demo_end(done) == [("demo:end", "")]
        publish(client, running.url, channel, "after the demo")
        assert [event.data for event in done.take(1)] == ["after the demo"]


@pytest.mark.parametrize(
    ("query", "cursor", "reason"),
    [
        ("channel=demo&demo=true", None, "no channel may be named demo"),
        ("channel=a&demo=true", "1-1", "Last-Event-ID"),  # the demo's part is missing
        ("channel=a", "1-1,0-1", "Last-Event-ID"),  # a demo part, and no demo
    ],
    ids=["named-demo", "cursor-without-demo", "cursor-with-demo"],
)
def test_a_bad_demo_request_gets_400_with_a_reason(
    running: RunningServer, client: httpx.Client, query: str, cursor: str | None, reason: str
):
    headers = {"Last-Event-ID": cursor} if cursor else {}
    response = client.get(f"{running.url}/channels/events?{query}", headers=headers)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
