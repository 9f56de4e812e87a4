"""Redis broker: a Redis stream per channel for history, pub/sub for live delivery.

- Publishing is one Lua script: XADD to the channel's stream, with an approximate
  MAXLEN (whole nodes are trimmed, so at least `history_size` messages stay), and
  PUBLISH of the message with the id XADD gave it. The stream id is the SSE id, so an id
  from any worker resumes on any other. A publish is acknowledged only once the script
  returned, so no acknowledged message is lost unless Redis itself loses it: run it
  with AOF persistence. With `wait_replicas`, only once that many replicas have it too
  (WAIT, on the script's connection): then a failover to one of them loses nothing
  acknowledged (see redis_sentinel.py for following the master).
- Live delivery: one pub/sub connection per worker for all channels (see redis_live.py).
  Commands (publish, history reads) share a small blocking pool, so a worker holds at
  most POOL + 1 connections to Redis however many channels and clients it serves.
- History is read in pages (XRANGE ... COUNT); identical reads are coalesced
  (singleflight), as a reconnect storm asks for the same page thousands of times.
- Redis slow or paused: streams stay open and resume where they stopped. The
  subscription connection lost: it is made again, and each channel's gap filled from the
  id it last delivered; only if Redis stays away for OUTAGE_GRACE are this worker's
  streams ended (their clients retry, and resume by Last-Event-ID once it is back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, Sentinel
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .base import Broker, BrokerUnavailable
from .messages import Key, Message, Page, format_id, make_message, parse_id
from .redis_live import LOST, LiveChannels, tagged
from .redis_sentinel import describe, sentinel_pool
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

KEY_PREFIX = "{{ cookiecutter.project_slug }}:channel:"
LIVE_PREFIX = "{{ cookiecutter.project_slug }}:live:"
EMPTY = "0-0"  # the id before any entry of a stream
PING_TIMEOUT = 2.0
#: Connections for commands; a caller beyond them waits for one (never an error).
POOL = 6
#: Redis away this long: end the streams (their clients retry until it is back).
OUTAGE_GRACE = 5.0
#: Entries per XRANGE when a reconnect fills a channel's gap.
FILL_PAGE = 500

# XADD and PUBLISH in one step: a live message always carries the id of its stream entry,
# and live messages leave in the order of the stream.
PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'event', ARGV[2], 'data', ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return id
"""


def stream_key(channel: str) -> str:
    """The channel's stream. The `{name}` hash tag puts every key of a channel in one
    slot of a Redis Cluster (the publish script touches the stream and the live channel
    at once); on a single Redis it is only part of the name."""
    return tagged(KEY_PREFIX, channel)


def live_key(channel: str) -> str:
    """The pub/sub channel of its live messages: the same hash tag as its stream."""
    return tagged(LIVE_PREFIX, channel)


class RedisBroker(Broker):
    name = "redis"
    publish_script = PUBLISH

    def __init__(
        self,
        *,
        url: str,
        history_size: int,
        replay_max_bytes: int = 8 * 1024 * 1024,
        sentinels: Sequence[tuple[str, int]] = (),
        master: str = "",
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        super().__init__(replay_max_bytes=replay_max_bytes)
        self.history_size = history_size
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.sentinel: Sentinel | None = None
        self.redis, self.where = self._client(url, sentinels, master)
        self._publish = self.redis.register_script(self.publish_script)
        self._pages: SingleFlight[tuple[str, str, int], Page] = SingleFlight()
        self.live = self._live_channels()
        self._problem: str | None = None
        self._outage: asyncio.TimerHandle | None = None

    def _client(
        self, url: str, sentinels: Sequence[tuple[str, int]], master: str
    ) -> tuple[Redis, str]:
        """The client for commands, and where Redis is (for messages)."""
        options: dict[str, Any] = dict(
            max_connections=POOL,
            timeout=None,  # wait for a connection: commands are short
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            # One quick retry covers a pooled connection that went stale (Redis restarted).
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        )
        if sentinels:
            self.sentinel, pool = sentinel_pool(url, sentinels, master, **options)
            return Redis(connection_pool=pool), describe(sentinels, master)
        pool = BlockingConnectionPool.from_url(url, **options)
        kwargs = pool.connection_kwargs
        # Never the URL itself, which may hold a password.
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return Redis(connection_pool=pool), where

    def _live_channels(self) -> LiveChannels:
        return LiveChannels(
            redis=self.redis,
            prefix=LIVE_PREFIX,
            deliver=self._deliver,
            fill=self._fill,
            newest=self._newest,
            on_gap=self._gap,
            on_lost=self._lost,
            on_back=self._back,
        )

    # -- lifecycle and health ------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT)
        except MasterNotFoundError:  # its text lists every sentinel client's settings
            reason = "no sentinel answered with a master that is up"
            raise BrokerUnavailable(f"cannot reach Redis at {self.where}: {reason}") from None
        except (*LOST, RedisError) as exc:
            reason = str(exc) or f"no answer within {PING_TIMEOUT:g} s"
            raise BrokerUnavailable(f"cannot reach Redis at {self.where}: {reason}") from None
        self.live.start()
        # Streams are served only once live delivery is up (see `available`).
        try:
            await asyncio.wait_for(self.live.up.wait(), PING_TIMEOUT)
        except asyncio.TimeoutError:
            await self.live.stop()
            raise BrokerUnavailable(f"cannot subscribe in Redis at {self.where}") from None

    async def stop(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
        await self.live.stop()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()  # a pool passed in is not closed with it
        if self.sentinel is not None:  # (Sentinel.aclose is new in redis-py 8)
            await asyncio.gather(*(client.aclose() for client in self.sentinel.sentinels))

    @property
    def available(self) -> bool:
        return self.live.up.is_set()

    async def check(self) -> str | None:
        if not self.live.up.is_set():
            return self._problem or f"Redis at {self.where} is unreachable"
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT)
        except LOST:
            return f"Redis at {self.where} does not answer within {PING_TIMEOUT:g} s"
        return None

    def _lost(self, exc: BaseException) -> None:
        if self._problem is None:
            log.warning("Redis at %s lost (%s); reconnecting", self.where, exc)
            self._problem = f"Redis at {self.where} is unreachable"
        if self._outage is None:
            loop = asyncio.get_running_loop()
            self._outage = loop.call_later(OUTAGE_GRACE, self._end_streams)

    def _back(self) -> None:
        if self._problem is not None:
            log.warning("Redis at %s is back", self.where)
        self._problem = None
        if self._outage is not None:
            self._outage.cancel()
            self._outage = None

    def _end_streams(self) -> None:
        self._outage = None
        if not self.live.up.is_set():
            log.warning("Redis at %s still away; ending this worker's streams", self.where)
            for subscribers in self.local.values():
                subscribers.close_all("broker")

    # -- publishing and history ----------------------------------------------------------

    async def publish(self, channel: str, event: str, data: str) -> str:
        key, args = stream_key(channel), [self.history_size, event, data, live_key(channel)]
        try:
            if self.wait_replicas:
                entry_id, replicas = await self._publish_and_wait(key, args)
            else:
                entry_id, replicas = await self._publish(keys=[key], args=args), 0
        except LOST as exc:
            raise BrokerUnavailable(f"Redis at {self.where} is unreachable") from exc
        except RedisError as exc:  # e.g. out of memory: refused, but not gone
            raise BrokerUnavailable(f"Redis refused the message: {exc}") from exc
        if replicas < self.wait_replicas:
            raise BrokerUnavailable(
                f"message {entry_id.decode()} is on the Redis master and was sent to "
                f"subscribers, but {replicas} of the {self.wait_replicas} replicas required "
                f"confirmed it within {self.wait_timeout:g} s: it may be lost if the master "
                "fails; publishing it again stores a second copy, with a new id"
            )
        return entry_id.decode()

    async def _publish_and_wait(self, key: str, args: list[Any]) -> tuple[bytes, int]:
        """The publish script, then WAIT: (id, replicas that have it), in one round trip."""
        try:
            return await self._run_and_wait("EVALSHA", self._publish.sha, key, args)
        except NoScriptError:
            # A master that does not know the script yet (a replica promoted since)
            # refused it without running it: sending the source makes no second copy.
            return await self._run_and_wait("EVAL", self.publish_script, key, args)

    async def _run_and_wait(
        self, command: str, script: str, key: str, args: list[Any]
    ) -> tuple[bytes, int]:
        # WAIT counts the writes of its own connection: the pipeline keeps them on one.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(command, script, 1, key, *args)
            pipe.wait(self.wait_replicas, max(1, round(self.wait_timeout * 1000)))
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply  # as Redis gave it (raised here, it would quote the message)
        entry_id, replicas = replies
        return entry_id, int(replicas)

    async def page(self, channel: str, after: str, count: int) -> Page:
        try:
            return await self._pages.do(
                (channel, after, count), lambda: self._page(channel, after, count)
            )
        except LOST as exc:
            raise BrokerUnavailable(f"Redis at {self.where} is unreachable") from exc

    async def _page(self, channel: str, after: str, count: int) -> Page:
        # The common case in one command: `after` still in the stream, read from it on.
        entries = await self.redis.xrange(stream_key(channel), min=after, max="+", count=count + 1)
        if entries and entries[0][0].decode() == after:
            messages = [_message(entry_id, fields) for entry_id, fields in entries[1:]]
            return Page(messages, len(messages) < count)
        return await self._page_checked(channel, after, count)

    async def _page_checked(self, channel: str, after: str, count: int) -> Page:
        """History after an id that is not in the stream, with the stream's state (MULTI)."""
        key = stream_key(channel)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_stream(key)
            pipe.xrange(key, min="(" + after, max="+", count=count)
            info, entries = await pipe.execute(raise_on_error=False)
        if isinstance(info, ResponseError):  # no such stream: nothing was ever published
            if parse_id(after) == (0, 0):
                return Page((), True, head=EMPTY)
            return Page((), True, f"unknown id {after}: this channel has no history", EMPTY)
        head = info["last-generated-id"].decode()
        # Before the XRANGE result: an exclusive start past the newest possible id is an
        # error there, and it is only an unknown id here.
        if parse_id(after) > parse_id(head):
            reason = f"unknown id {after}: newer than this channel's last message"
            return Page((), True, reason, head)
        if isinstance(entries, Exception):
            raise entries
        if _trimmed_after(info, after):
            return Page((), True, f"id {after} is older than this channel's history", head)
        messages = [_message(entry_id, fields) for entry_id, fields in entries]
        return Page(messages, len(messages) < count, head=head)

    async def head(self, channel: str) -> str:
        return format_id((await self._newest([channel]))[0])

    async def _newest(self, channels: Sequence[str]) -> list[Key]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.xrevrange(stream_key(channel), max="+", min="-", count=1)
            replies = await pipe.execute()
        return [parse_id(entries[0][0].decode()) if entries else (0, 0) for entries in replies]

    async def _fill(self, channel: str, after: Key) -> list[Message] | None:
        """Everything after `after`, or None if some of it is gone (trimmed, lost)."""
        missed: list[Message] = []
        while True:
            page = await self._page(channel, format_id(after), FILL_PAGE)
            if page.reset is not None:
                return None
            missed.extend(page.messages)
            if page.last:
                return missed
            after = missed[-1].key

    # -- live delivery -------------------------------------------------------------------

    def _watch(self, channel: str) -> None:
        self.live.acquire(channel)

    def _unwatch(self, channel: str) -> None:
        self.live.release(channel)

    async def ready(self, channel: str) -> str:
        return format_id(await self.live.ready(channel))

    def _deliver(self, channel: str, batch: Sequence[Message]) -> None:
        subscribers = self.local.get(channel)
        if subscribers is not None:
            subscribers.deliver(batch)

    def _gap(self, channel: str) -> None:
        # Missed messages that are gone from the history: the subscribers reconnect, and
        # their resume by Last-Event-ID gets the reset that says so.
        subscribers = self.local.get(channel)
        if subscribers is not None:
            subscribers.close_all("broker")


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
