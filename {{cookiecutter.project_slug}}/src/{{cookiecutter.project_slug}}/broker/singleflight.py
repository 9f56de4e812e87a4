"""Coalesce identical concurrent calls into one ("singleflight").

In a reconnect storm thousands of clients ask for the same history at once (same
channel, same Last-Event-ID); one read then serves them all instead of one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}

    async def do(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """The result of `call()`, shared with every caller asking for `key` meanwhile."""
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one caller leaving (its client went away) must not cancel the
        # read the others are waiting for.
        return await asyncio.shield(task)

    def _forget(self, key: K, done: asyncio.Task[V]) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" warning if all callers left
