"""Redis broker: one Redis stream per channel, shared by every worker process and host.

- Publishing is `XADD` with an approximate `MAXLEN` (whole nodes are trimmed, so at least
  `history_size` messages stay); the stream id Redis assigns is the SSE id, so an id from
  any worker resumes on any other.
- Each worker runs ONE reader task per channel that has local subscribers: a blocking
  `XREAD` that fans out to them. Redis sees one connection per active channel and
  worker, never one per client. A reader whose channel has no subscribers left stops
  after its current read.
- History reads for the same channel and Last-Event-ID are coalesced (singleflight).
- Redis lost while running: every local stream is closed (clients reconnect and resume
  by Last-Event-ID once it is back), new streams and publishes get 503, and a watchdog
  finds out when it returns. A publish is acknowledged only once `XADD` returned, so no
  acknowledged message is lost unless Redis itself loses it: run it with AOF persistence.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import Broker, BrokerUnavailable, Message, Replay, Subscription, make_message, parse_id
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

KEY_PREFIX = "{{ cookiecutter.project_slug }}:channel:"
EMPTY = "0-0"  # the id before any entry of a stream
# Errors that mean "Redis is not reachable", as opposed to a command Redis refused.
LOST = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
PING_TIMEOUT = 2.0


class _Reader:
    """The live reader of one channel in this worker."""

    __slots__ = ("position", "started", "task")

    def __init__(self) -> None:
        #: The last id delivered; None until the reader knows where the stream ends.
        self.position: str | None = None
        self.started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Awaited only by subscribers that joined early; do not warn when nobody did.
        self.started.add_done_callback(lambda f: f.exception())
        self.task: asyncio.Task[None] | None = None


class RedisBroker(Broker):
    name = "redis"

    def __init__(
        self,
        *,
        url: str,
        history_size: int,
        block_ms: int = 1000,
        batch: int = 500,
        watch_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.history_size = history_size
        self.block_ms = block_ms
        self.batch = batch
        self.watch_interval = watch_interval
        self.redis = Redis.from_url(
            url,
            # Above block_ms, so a blocking XREAD is not mistaken for a dead server.
            socket_timeout=max(5.0, 2 * block_ms / 1000),
            socket_connect_timeout=2.0,
            # One quick retry covers a pooled connection that went stale (Redis restarted).
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        )
        kwargs = self.redis.connection_pool.connection_kwargs
        # Where Redis is, for messages; never the URL itself, which may hold a password.
        self.where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._readers: dict[str, _Reader] = {}
        self._reads: SingleFlight[tuple[str, str], Replay] = SingleFlight()
        self._problem: str | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # -- lifecycle and health ------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT)
        except (*LOST, RedisError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis at {self.where}: {exc}") from None
        self._watchdog = asyncio.create_task(self._watch_health(), name="redis-watchdog")

    async def stop(self) -> None:
        tasks = [reader.task for reader in self._readers.values() if reader.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.redis.aclose()

    @property
    def available(self) -> bool:
        return self._problem is None

    async def check(self) -> str | None:
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT)
        except LOST as exc:
            self._lost(exc)
        else:
            self._problem = None
        return self._problem

    async def _watch_health(self) -> None:
        # Notices an outage even when nothing is published or read, and the recovery
        # (nothing else would: new streams are refused while Redis is away).
        while True:
            await asyncio.sleep(self.watch_interval)
            await self.check()

    def _lost(self, exc: BaseException) -> None:
        if self._problem is None:
            log.warning("Redis at %s lost (%s); closing this worker's streams", self.where, exc)
        self._problem = f"Redis at {self.where} is unreachable"
        for subscribers in self.local.values():
            subscribers.close_all("broker")

    # -- publishing and history ----------------------------------------------------------

    async def publish(self, channel: str, event: str, data: str) -> str:
        fields = {"event": event, "data": data}
        try:
            entry_id = await self.redis.xadd(
                KEY_PREFIX + channel, fields, maxlen=self.history_size, approximate=True
            )
        except LOST as exc:
            self._lost(exc)
            raise BrokerUnavailable(self._problem or "Redis is unreachable") from exc
        except RedisError as exc:  # e.g. out of memory: refused, but not gone
            raise BrokerUnavailable(f"Redis refused the message: {exc}") from exc
        self._problem = None
        return entry_id.decode()

    async def ready(self, subscription: Subscription) -> None:
        await self._floor(subscription)

    async def _floor(self, subscription: Subscription) -> str:
        """Where live delivery to `subscription` starts: after this id."""
        if subscription.floor is not None:
            return subscription.floor
        # Registered before the channel's reader knew where the stream ended: it delivers
        # everything after the position it started from.
        reader = self._readers.get(subscription.channel)
        if reader is None:
            raise BrokerUnavailable("the channel's reader stopped")
        try:
            return await asyncio.shield(reader.started)
        except LOST as exc:
            self._lost(exc)
            raise BrokerUnavailable(self._problem or "Redis is unreachable") from exc

    async def replay(self, subscription: Subscription, after: str) -> Replay:
        channel = subscription.channel
        floor = await self._floor(subscription)
        try:
            replay = await self._reads.do((channel, after), lambda: self._read(channel, after))
            if parse_id(replay.head) < parse_id(floor):
                # The shared read began before this subscriber's live delivery did, so it
                # may miss messages in between: read again, now that it is registered.
                replay = await self._read(channel, after)
        except LOST as exc:
            self._lost(exc)
            raise BrokerUnavailable(self._problem or "Redis is unreachable") from exc
        return replay

    async def _read(self, channel: str, after: str) -> Replay:
        """History after `after` and the stream's state, read atomically (MULTI)."""
        key = KEY_PREFIX + channel
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(key)
            pipe.xrange(key, min="(" + after, max="+")
            info, entries = await pipe.execute(raise_on_error=False)
        if isinstance(info, ResponseError):  # no such stream: nothing was ever published
            if parse_id(after) == (0, 0):
                return Replay((), EMPTY)
            return Replay((), EMPTY, f"unknown id {after}: this channel has no history")
        head = info["last-generated-id"].decode()
        # Before the XRANGE result: an exclusive start past the newest possible id is an
        # error there, and it is only an unknown id here.
        if parse_id(after) > parse_id(head):
            return Replay((), head, f"unknown id {after}: newer than this channel's last message")
        if isinstance(entries, Exception):
            raise entries
        if _trimmed_after(info, after):
            return Replay((), head, f"id {after} is older than this channel's history")
        return Replay([_message(entry_id, fields) for entry_id, fields in entries], head)

    # -- live delivery -------------------------------------------------------------------

    def _watch(self, channel: str) -> str | None:
        reader = self._readers.get(channel)
        if reader is None:
            reader = self._readers[channel] = _Reader()
            reader.task = asyncio.create_task(self._read_live(channel, reader))
        return reader.position

    async def _read_live(self, channel: str, reader: _Reader) -> None:
        key = KEY_PREFIX + channel
        try:
            position = await self._last_id(key)
            reader.position = position
            reader.started.set_result(position)
            # Runs while the channel has subscribers here; the check follows each read, so
            # a subscriber arriving during a read keeps this reader (and its position).
            while self.local.get(channel):
                reply = await self.redis.xread(
                    {key: position}, count=self.batch, block=self.block_ms
                )
                for _key, entries in reply or ():
                    batch = [_message(entry_id, fields) for entry_id, fields in entries]
                    position = reader.position = batch[-1].id
                    subscribers = self.local.get(channel)
                    if subscribers is not None:
                        subscribers.deliver(batch)
        except LOST as exc:
            self._lost(exc)
        except RedisError as exc:
            log.error("reading channel %r failed: %s", channel, exc)
            subscribers = self.local.get(channel)
            if subscribers is not None:
                subscribers.close_all("broker")
        finally:
            if not reader.started.done():
                reader.started.set_exception(BrokerUnavailable("the channel's reader stopped"))
            if self._readers.get(channel) is reader:
                del self._readers[channel]

    async def _last_id(self, key: str) -> str:
        try:
            info = await self.redis.xinfo_stream(key)
        except ResponseError:  # no such stream yet
            return EMPTY
        return info["last-generated-id"].decode()


def _trimmed_after(info: dict[str, Any], after: str) -> bool:
    """Whether trimming may have removed messages newer than `after`.

    Only MAXLEN trims these streams (never XDEL), so every entry older than the first one
    kept was trimmed, and entries-added minus length counts them. An id older than the
    first entry, on a stream that was trimmed, may have missed some: a reset says so.
    (Redis does not record the last trimmed id, so a client that saw exactly that entry
    gets a reset it could have done without; never a silent gap.)
    """
    first = info.get("first-entry")
    if not first or parse_id(after) >= parse_id(first[0].decode()):
        return False
    added = info.get("entries-added")  # Redis 7+; older servers: assume trimmed
    return added is None or int(added) > int(info.get("length", 0))


def _message(entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
    return make_message(
        entry_id.decode(),
        fields.get(b"event", b"message").decode(),
        fields.get(b"data", b"").decode(),
    )
