"""A small spec-following SSE reader and publisher for the channel tests.

Parsing the raw lines (instead of httpx-sse) lets the tests see comments too: the
`: live` comment tells a subscriber that anything published from then on reaches it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class Subscription:
    lines: Iterator[str]
    events: list[Event] = field(default_factory=list)
    last_id: str | None = None

    def next_event(self) -> Event | None:
        """The next event, or None when the stream ends; comments are skipped."""
        data: list[str] = []
        event = Event()
        for line in self.lines:
            if line == "":
                if data or event.event != "message":
                    event.data = "\n".join(data)
                    self.events.append(event)
                    if event.id is not None:
                        self.last_id = event.id
                    return event
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
        return None

    def take(self, count: int) -> list[Event]:
        got: list[Event] = []
        while len(got) < count:
            event = self.next_event()
            if event is None:
                break
            got.append(event)
        return got

    def rest(self) -> list[Event]:
        """Every event until the server closes the stream."""
        got: list[Event] = []
        while (event := self.next_event()) is not None:
            got.append(event)
        return got


@contextmanager
def subscribe(
    client: httpx.Client, url: str, channel: str, last_id: str | None = None, query: str = ""
) -> Iterator[Subscription]:
    """Open the channel's stream and return once it is live (the `: live` comment)."""
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    with live_stream(client, f"{url}/channels/{channel}/events{query}", headers) as subscription:
        yield subscription


@contextmanager
def live_stream(
    client: httpx.Client, address: str, headers: dict[str, str]
) -> Iterator[Subscription]:
    """Open any channel stream (one channel or several) and return once it is live."""
    with client.stream("GET", address, headers=headers) as response:
        assert response.status_code == 200, response.read()
        lines = response.iter_lines()
        replayed: list[str] = []
        for line in lines:
            if line == ": live":
                break
            replayed.append(line)
        else:
            raise AssertionError("the stream ended before it went live")
        subscription = Subscription(iter(replayed))
        subscription.rest()  # the replay, parsed into .events
        subscription.lines = lines
        yield subscription


def publish(
    client: httpx.Client,
    url: str,
    channel: str,
    data: str,
    event: str | None = None,
    token: str | None = None,
) -> str:
    body: dict[str, str] = {"data": data}
    if event is not None:
        body["event"] = event
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(f"{url}/channels/{channel}/messages", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def new_channel() -> str:
    """A fresh channel name: tests may share one broker (one Redis server)."""
    return "t-" + uuid.uuid4().hex[:12]


def wait_for(condition: Callable[[], object], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(step)
    return bool(result)
