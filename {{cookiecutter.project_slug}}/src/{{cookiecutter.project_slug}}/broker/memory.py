"""In-process broker: a history ring per channel and direct fan-out. One worker only.

Ids are "<run>-<n>": `n` counts a channel's messages and `run` is when this process
started (in ms). After a restart the history is gone; an id from the previous run is
then recognised as unknown and the client is told (a reset), instead of being silently
resumed from the new run's message `n + 1`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from .base import Broker, Message, Replay, Subscription, make_message, parse_id


class _History:
    __slots__ = ("count", "ring")

    def __init__(self, size: int) -> None:
        self.ring: deque[Message] = deque(maxlen=size)
        self.count = 0  # messages ever published; the last one's number


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, *, history_size: int) -> None:
        super().__init__()
        self.history_size = history_size
        self.run = time.time_ns() // 1_000_000
        self.channels: dict[str, _History] = {}

    async def publish(self, channel: str, event: str, data: str) -> str:
        history = self.channels.get(channel)
        if history is None:
            history = self.channels[channel] = _History(self.history_size)
        history.count += 1
        message = make_message(f"{self.run}-{history.count}", event, data)
        history.ring.append(message)
        subscribers = self.local.get(channel)
        if subscribers is not None:
            subscribers.deliver((message,))
        return message.id

    async def replay(self, subscription: Subscription, after: str) -> Replay:
        # No await in here: history and registration are one consistent snapshot.
        history = self.channels.get(subscription.channel) or _History(0)
        head = f"{self.run}-{history.count}"
        run, number = parse_id(after)
        if run != self.run:
            return Replay((), head, f"unknown id {after}: the server has restarted since")
        if number > history.count:
            return Replay((), head, f"unknown id {after}: newer than this channel's last message")
        first = history.count - len(history.ring) + 1  # number of the oldest message kept
        if number < first - 1:
            return Replay((), head, f"id {after} is older than the {len(history.ring)} kept")
        return Replay(list(itertools.islice(history.ring, number - first + 1, None)), head)
