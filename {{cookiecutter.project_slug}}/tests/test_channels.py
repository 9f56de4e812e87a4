"""Broadcast channels over HTTP: subscribe, replay, publish, limits and auth.

The same tests run against whichever broker the project was baked with.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from conftest import RunningServer
from sse_client import new_channel, publish, subscribe, wait_for


@pytest.fixture
def channels(serve) -> RunningServer:
    return serve(history_size=20, subscriber_queue=8, heartbeat_interval=5)


def test_subscribers_get_every_message_in_order_with_ids(
    channels: RunningServer, client: httpx.Client
):
    channel = new_channel()
    with (
        subscribe(client, channels.url, channel) as first,
        httpx.Client(timeout=10) as other,
        subscribe(other, channels.url, channel) as second,
    ):
        ids = [publish(client, channels.url, channel, f"m{n}") for n in range(5)]
        for subscription in (first, second):
            got = subscription.take(5)
            assert [event.data for event in got] == [f"m{n}" for n in range(5)]
            assert [event.id for event in got] == ids
            assert {event.event for event in got} == {"message"}
    assert len(set(ids)) == 5


def test_event_name_is_sent(channels: RunningServer, client: httpx.Client):
    channel = new_channel()
    with subscribe(client, channels.url, channel) as subscription:
        publish(client, channels.url, channel, "x", event="price.update")
        assert subscription.take(1)[0].event == "price.update"


@pytest.mark.parametrize(
    "data",
    ["line one\nline two\n\nline four", "\n\nevent: x\ndata: y", "crlf\r\nand\rcr", "", " lead"],
)
def test_data_arrives_as_one_event_exactly(
    channels: RunningServer, client: httpx.Client, data: str
):
    channel = new_channel()
    with subscribe(client, channels.url, channel) as subscription:
        publish(client, channels.url, channel, data)
        publish(client, channels.url, channel, "after")
        got = subscription.take(2)
    # Line breaks of any kind arrive as "\n" (the spec's data model); nothing else changes.
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert [(event.event, event.data) for event in got] == [
        ("message", expected),
        ("message", "after"),
    ]


def test_replays_after_last_event_id(channels: RunningServer, client: httpx.Client):
    channel = new_channel()
    ids = [publish(client, channels.url, channel, f"m{n}") for n in range(6)]
    with subscribe(client, channels.url, channel, last_id=ids[2]) as subscription:
        assert [event.id for event in subscription.events] == ids[3:]
        new_id = publish(client, channels.url, channel, "live")
        assert subscription.take(1)[0].id == new_id


def test_last_event_id_can_come_as_a_query_parameter(channels: RunningServer, client: httpx.Client):
    """A page that must open a new EventSource cannot set headers; it can set the URL."""
    channel = new_channel()
    ids = [publish(client, channels.url, channel, f"m{n}") for n in range(3)]
    with subscribe(client, channels.url, channel, query=f"?last_event_id={ids[0]}") as sub:
        assert [event.id for event in sub.events] == ids[1:]


def test_latest_id_resumes_with_nothing(channels: RunningServer, client: httpx.Client):
    channel = new_channel()
    last = [publish(client, channels.url, channel, f"m{n}") for n in range(3)][-1]
    with subscribe(client, channels.url, channel, last_id=last) as subscription:
        assert subscription.events == []


def test_too_old_id_gets_a_reset_event(serve, client: httpx.Client):
    running = serve(history_size=5)
    channel = new_channel()
    ids = [publish(client, running.url, channel, f"m{n}") for n in range(40)]
    with subscribe(client, running.url, channel, last_id=ids[0]) as subscription:
        [reset] = subscription.events
        assert reset.event == "reset"
        assert "older" in reset.data
        # It carries the newest id, so the next reconnect resumes from there.
        assert reset.id == ids[-1]
        new_id = publish(client, running.url, channel, "next")
        assert subscription.take(1)[0].id == new_id


def test_unknown_id_gets_a_reset_event(channels: RunningServer, client: httpx.Client):
    channel = new_channel()
    with subscribe(client, channels.url, channel, last_id="5-5") as subscription:
        [reset] = subscription.events
        assert reset.event == "reset"
        assert "unknown" in reset.data


@pytest.mark.parametrize(
    "bad",
    [
        *["abc", "1", "-1-1", "1-2-3", "1" * 21 + "-0", "x" * 5000],
        # These fit the pattern but not Redis's unsigned 64-bit parts.
        *["9" * 20 + "-0", "0-18446744073709551616"],
    ],
)
def test_bad_last_event_id_gets_400(channels: RunningServer, client: httpx.Client, bad: str):
    response = client.get(
        f"{channels.url}/channels/{new_channel()}/events", headers={"Last-Event-ID": bad}
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


def test_no_gap_and_no_duplicate_at_the_seam(serve, client: httpx.Client):
    """Resume again and again while a publisher keeps going: every message exactly once."""
    # History longer than everything published: a slow machine must not turn it into a reset.
    channels = serve(history_size=1000)
    channel = new_channel()
    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        with httpx.Client(timeout=10) as own:
            while not stop.is_set() and len(published) < 300:
                published.append(publish(own, channels.url, channel, f"m{len(published)}"))

    received: list[str] = []
    last = publish(client, channels.url, channel, "start")
    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        for _ in range(8):
            with subscribe(client, channels.url, channel, last_id=last) as subscription:
                subscription.take(5)
                assert not [event for event in subscription.events if event.event == "reset"]
                received.extend(event.id for event in subscription.events if event.id)
                last = subscription.last_id or last
    finally:
        stop.set()
        thread.join(30)
    with subscribe(client, channels.url, channel, last_id=last) as subscription:
        received.extend(event.id for event in subscription.events if event.id)
    assert received == published[: len(received)]
    assert len(received) == len(published)


@pytest.mark.parametrize("name", ["a b", "x" * 65, "semi;colon", "ümlaut"])
def test_bad_channel_name_gets_422(channels: RunningServer, client: httpx.Client, name: str):
    assert client.get(f"{channels.url}/channels/{name}/events").status_code == 422
    response = client.post(f"{channels.url}/channels/{name}/messages", json={"data": "x"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"data": "x", "event": "two\nlines"},
        {"data": "x", "event": "x" * 65},
        {"data": "x", "event": ""},
        {"data": 5},
        {"event": "only"},
        {"data": "x", "extra": 1},
    ],
)
def test_bad_message_gets_422(channels: RunningServer, client: httpx.Client, body: dict):
    response = client.post(f"{channels.url}/channels/{new_channel()}/messages", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b'"\\ud800"', "application/json", 422),
        (b'{"data": "\\ud800"}', "application/json", 422),
        (b"data=x", "application/x-www-form-urlencoded", 415),
        (b'{"data": "x"}', "text/plain", 415),
    ],
)
def test_bad_body_gets_a_4xx_with_a_reason(
    channels: RunningServer, client: httpx.Client, content: bytes, content_type: str, status: int
):
    response = client.post(
        f"{channels.url}/channels/{new_channel()}/messages",
        content=content,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == status
    assert response.json()["detail"]


def test_message_size_limit(serve, client: httpx.Client):
    running = serve(max_message_bytes=100)
    url = f"{running.url}/channels/{new_channel()}/messages"
    assert client.post(url, json={"data": "é" * 50}).status_code == 201  # 100 bytes
    too_big = client.post(url, json={"data": "é" * 51})
    assert too_big.status_code == 413
    assert "100" in too_big.json()["detail"]
    huge = client.post(url, json={"data": "x" * 10_000_000})
    assert huge.status_code == 413


def test_publish_token(serve, client: httpx.Client):
    running = serve(publish_token="s3cret")
    channel = new_channel()
    url = f"{running.url}/channels/{channel}/messages"
    missing = client.post(url, json={"data": "x"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong", "Bearer s3cret2", "Bearer", "Basic s3cret"):
        status = client.post(url, json={"data": "x"}, headers={"Authorization": header})
        assert status.status_code in (401, 403), header
    wrong = client.post(url, json={"data": "x"}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    # Subscribing stays open; publishing with the token works.
    with subscribe(client, running.url, channel) as subscription:
        publish(client, running.url, channel, "ok", token="s3cret")
        assert subscription.take(1)[0].data == "ok"


def test_a_slow_subscriber_is_dropped_and_the_publisher_never_waits(serve, client: httpx.Client):
    running = serve(subscriber_queue=4, history_size=5)
    channel = new_channel()
    # A client that subscribes and then stops reading, with a tiny receive window. The
    # server's socket buffer still takes up to 4 MB (Linux's default tcp_wmem maximum),
    # so the publisher sends 6 times that.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    port = int(running.url.rsplit(":", 1)[1])
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    deadline = time.monotonic() + 5
    while b": live" not in received and time.monotonic() < deadline:
        received += sock.recv(1024)
    try:
        started = time.monotonic()
        for n in range(400):
            publish(client, running.url, channel, f"{n}:" + "x" * 60_000)
        assert time.monotonic() - started < 30, "publishing must not wait for a slow client"
        # Reading again, the client finds its stream ended long before the 100th message.
        deadline = time.monotonic() + 20
        while not received.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    assert received.endswith(b"\r\n0\r\n\r\n"), "the server must end the stream"
    assert b"\ndata: 399:" not in received
    assert wait_for(lambda: client.get(running.url + "/healthz").json()["streams"] == 0)


def test_heartbeats_on_a_quiet_channel(serve, client: httpx.Client):
    running = serve(heartbeat_interval=0.2)
    with client.stream("GET", f"{running.url}/channels/{new_channel()}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        comments = 0
        deadline = time.monotonic() + 5
        while comments < 3 and time.monotonic() < deadline:
            if next(lines) == ": ping":
                comments += 1
        assert comments == 3


def test_healthz_names_the_broker(channels: RunningServer, client: httpx.Client):
    body = client.get(channels.url + "/healthz").json()
    assert body["status"] == "ok"
    assert body["broker"] == "{{ cookiecutter.broker }}"


def test_page_has_the_channel_panel(channels: RunningServer, client: httpx.Client):
    page = client.get(channels.url + "/").text
    assert 'id="channel"' in page
    assert 'id="publish-form"' in page
    assert 'id="demo"' in page  # the demo panel is still there
