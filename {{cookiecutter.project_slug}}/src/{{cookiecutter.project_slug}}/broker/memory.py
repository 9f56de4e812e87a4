"""In-process broker: a history ring per channel and direct fan-out. One worker only.

Ids are "<run>-<n>": `n` counts every message this process has published, on any
channel, and `run` is when the process started (in ms). So an id is never issued twice:
not after a restart (an id from the previous run is recognised and the client is told,
with a reset, instead of being resumed from the new run's message `n + 1`), and not
after a channel was forgotten and made again. A client resuming a channel that was
forgotten is told, with a reset, that its history is gone.

Memory is bounded: each channel keeps its last SSE_HISTORY_SIZE messages, and at most
SSE_MAX_CHANNELS channels are kept; making one more forgets the channel published to
least recently that has no subscriber.
"""

from __future__ import annotations

import time
from collections import deque

from .base import Broker, BrokerUnavailable, Message, Replay, Subscription, make_message, parse_id


class _History:
    __slots__ = ("floor", "ring")

    def __init__(self, size: int, floor: int) -> None:
        self.ring: deque[tuple[int, Message]] = deque(maxlen=size)
        # The newest message number this channel may have lost: the last one pushed out
        # of the ring, or, for a new channel, the newest of every forgotten channel (a
        # client holding an older one may have missed a forgotten channel of that name).
        self.floor = floor


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, *, history_size: int, max_channels: int = 10_000) -> None:
        super().__init__()
        self.history_size = history_size
        self.max_channels = max_channels
        self.run = time.time_ns() // 1_000_000
        self.sequence = 0  # messages ever published by this process, on any channel
        self.forgotten = 0  # the newest message number of every channel forgotten so far
        #: Least recently published first: the order in which channels are forgotten.
        self.channels: dict[str, _History] = {}

    async def publish(self, channel: str, event: str, data: str) -> str:
        history = self.channels.pop(channel, None)
        if history is None:
            self._make_room()
            history = _History(self.history_size, floor=self.forgotten)
        self.channels[channel] = history  # now the most recently published
        self.sequence += 1
        message = make_message(f"{self.run}-{self.sequence}", event, data)
        if len(history.ring) == history.ring.maxlen:
            history.floor = history.ring[0][0]
        history.ring.append((self.sequence, message))
        subscribers = self.local.get(channel)
        if subscribers is not None:
            subscribers.deliver((message,))
        return message.id

    def _make_room(self) -> None:
        if len(self.channels) < self.max_channels:
            return
        for name, history in self.channels.items():
            if name not in self.local:
                del self.channels[name]
                self.forgotten = max(self.forgotten, history.ring[-1][0])
                return
        raise BrokerUnavailable(
            f"all {self.max_channels} channels this worker keeps (SSE_MAX_CHANNELS) have "
            "subscribers; none can be forgotten for a new one"
        )

    async def replay(self, subscription: Subscription, after: str) -> Replay:
        # No await in here: history and registration are one consistent snapshot.
        history = self.channels.get(subscription.channel)
        newest = history.ring[-1][0] if history is not None else self.sequence
        head = f"{self.run}-{newest}"
        run, number = parse_id(after)
        if run != self.run:
            return Replay((), head, f"unknown id {after}: the server has restarted since")
        if number > self.sequence:
            return Replay((), head, f"unknown id {after}: newer than this channel's last message")
        if history is None:  # never published to, or forgotten since
            if number < self.forgotten:
                return Replay((), head, f"id {after} is older than this channel's history")
            return Replay((), head)
        if number < history.floor:
            return Replay((), head, f"id {after} is older than the {len(history.ring)} kept")
        missed: list[Message] = []
        for kept_number, message in reversed(history.ring):
            if kept_number <= number:
                break
            missed.append(message)
        missed.reverse()
        return Replay(missed, head)
