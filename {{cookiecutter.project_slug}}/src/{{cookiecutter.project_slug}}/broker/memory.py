"""In-process broker: a history ring per channel and direct fan-out. One worker only.

Ids are "<run>-<n>": `n` counts every message this process has published, on any
channel, and `run` is when the process started (in ms). So an id is never issued twice:
not after a restart (an id from the previous run is recognised and the client is told,
with a reset, instead of being resumed from the new run's message `n + 1`), and not
after a channel was forgotten and made again. A client resuming a channel that was
forgotten is told, with a reset, that its history is gone.

Memory is bounded three ways: each channel keeps its last SSE_HISTORY_SIZE messages;
all channels together keep at most SSE_HISTORY_MAX_BYTES of frames (the oldest messages
of the channels published to least recently go first); and at most SSE_MAX_CHANNELS
channels are kept (making one more forgets the channel published to least recently
that has no subscriber).
"""

from __future__ import annotations

import time
from collections import deque
from itertools import islice

from .base import Broker, BrokerUnavailable
from .messages import Message, Page, make_message, parse_id


class _History:
    __slots__ = ("floor", "ring")

    def __init__(self, floor: int) -> None:
        self.ring: deque[Message] = deque()
        # The newest message number this channel may have lost: the last one pushed out
        # of the ring, or, for a new channel, the newest of every forgotten channel (a
        # client holding an older one may have missed a forgotten channel of that name).
        self.floor = floor

    def drop_oldest(self) -> int:
        """Push the oldest message out; the bytes it freed."""
        message = self.ring.popleft()
        self.floor = message.key[1]
        return len(message.frame)


class MemoryBroker(Broker):
    name = "memory"

    def __init__(
        self,
        *,
        history_size: int,
        history_max_bytes: int = 256 * 1024 * 1024,
        max_channels: int = 10_000,
        replay_max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(replay_max_bytes=replay_max_bytes)
        self.history_size = history_size
        self.history_max_bytes = history_max_bytes
        self.max_channels = max_channels
        self.run = time.time_ns() // 1_000_000
        self.sequence = 0  # messages ever published by this process, on any channel
        self.forgotten = 0  # the newest message number of every channel forgotten so far
        self.bytes = 0  # the frames every history holds
        #: Least recently published first: the order in which channels are forgotten.
        self.channels: dict[str, _History] = {}

    async def publish(self, channel: str, event: str, data: str) -> str:
        history = self.channels.pop(channel, None)
        if history is None:
            self._make_room()
            history = _History(floor=self.forgotten)
        self.channels[channel] = history  # now the most recently published
        self.sequence += 1
        message = make_message(f"{self.run}-{self.sequence}", event, data)
        if len(history.ring) >= self.history_size:
            self.bytes -= history.drop_oldest()
        history.ring.append(message)
        self.bytes += len(message.frame)
        self._keep_within_bytes(message)
        subscribers = self.local.get(channel)
        if subscribers is not None:
            subscribers.deliver((message,))
        return message.id

    def _keep_within_bytes(self, newest: Message) -> None:
        if self.bytes <= self.history_max_bytes:
            return
        for name in list(self.channels):  # least recently published first
            history = self.channels[name]
            # The newest message always stays, even on its own over the budget.
            while history.ring and history.ring[0] is not newest:
                self.bytes -= history.drop_oldest()
                if self.bytes <= self.history_max_bytes:
                    return
            if not history.ring and name not in self.local:
                self._forget(name)

    def _make_room(self) -> None:
        if len(self.channels) < self.max_channels:
            return
        for name in self.channels:
            if name not in self.local:
                self._forget(name)
                return
        raise BrokerUnavailable(
            f"all {self.max_channels} channels this worker keeps (SSE_MAX_CHANNELS) have "
            "subscribers; none can be forgotten for a new one"
        )

    def _forget(self, name: str) -> None:
        history = self.channels.pop(name)
        newest = history.ring[-1].key[1] if history.ring else history.floor
        self.forgotten = max(self.forgotten, newest)
        self.bytes -= sum(len(message.frame) for message in history.ring)

    async def ready(self, channel: str) -> str:
        # Delivery is a call in publish(): everything from now on reaches the subscriber.
        return f"{self.run}-{self.sequence}"

    async def head(self, channel: str) -> str:
        return self._head(channel)

    def _head(self, channel: str) -> str:
        history = self.channels.get(channel)
        newest = history.ring[-1].key[1] if history and history.ring else self.sequence
        return f"{self.run}-{newest}"

    async def page(self, channel: str, after: str, count: int) -> Page:
        # No await in here: each page is one consistent snapshot.
        history = self.channels.get(channel)
        head = self._head(channel)
        run, number = parse_id(after)
        if run != self.run:
            return Page((), True, f"unknown id {after}: the server has restarted since", head)
        if number > self.sequence:
            reason = f"unknown id {after}: newer than this channel's last message"
            return Page((), True, reason, head)
        if history is None:  # never published to, or forgotten since
            if number < self.forgotten:
                return Page((), True, f"id {after} is older than this channel's history", head)
            return Page((), True, head=head)
        if number < history.floor:
            return Page((), True, f"id {after} is older than the {len(history.ring)} kept", head)
        ring = history.ring
        start = len(ring)
        while start and ring[start - 1].key[1] > number:
            start -= 1
        messages = list(islice(ring, start, start + count))
        return Page(messages, start + count >= len(ring), head=head)
