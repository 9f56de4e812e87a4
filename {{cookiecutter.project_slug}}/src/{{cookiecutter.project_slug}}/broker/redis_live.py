"""Live delivery from Redis: ONE pub/sub connection per worker, for every channel.

- Publishing is one Lua script that XADDs the message to the channel's stream and
  PUBLISHes it, with the id XADD gave it, on the channel's pub/sub channel: live
  messages carry their stream ids, in stream order.
- A channel is SUBSCRIBEd when its first local subscriber arrives (the requests of one
  loop iteration go out as one command) and UNSUBSCRIBEd a moment (LINGER) after its last
  one left, so a page reload does not unsubscribe and subscribe again.
- `ready(channel)` returns once the SUBSCRIBE is confirmed and the channel's newest id is
  known: from then on every message published reaches this worker.
- The connection is watched with PING; when it is lost it is made again, every channel
  is subscribed again, and each channel's gap is filled from the id it last delivered
  (history read with XRANGE) before live messages flow again.
Redis sees one connection per worker for live delivery, whatever the number of channels
and subscribers (the README compares this with one XREAD over every stream).

On a Redis Cluster (redis_cluster.py) there is one of these per master, `sharded`: it
SSUBSCRIBEs the channels whose slots that master holds, and a channel Redis unsubscribes
on its own (its slot moved) ends the connection like a loss, so that the owner re-reads
the cluster's slots and moves the channel, its gap filled the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import BrokerUnavailable
from .messages import Key, Message, make_message

log = logging.getLogger(__name__)

# Errors that mean "Redis is not reachable", as opposed to a command Redis refused.
LOST = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
PING_EVERY = 2.0
#: Nothing heard for this long (not even a PONG): the connection is dead. Longer than a
#: `CLIENT PAUSE` of a few seconds, which only delays the replies.
SILENCE = 10.0
LINGER = 2.0
#: Channels named in one SUBSCRIBE or UNSUBSCRIBE command.
BATCH = 1000
#: How long a new subscriber waits for its channel to be subscribed.
READY_TIMEOUT = 5.0
#: Channels whose gaps are filled at the same time after a reconnect.
FILL_AT_ONCE = 32

#: Reads the history of a channel after an id: the messages, or None if some are gone.
Fill = Callable[[str, Key], Awaitable[list[Message] | None]]
#: The newest id of each of these channels.
Newest = Callable[[Sequence[str]], Awaitable[list[Key]]]
#: Sharded pub/sub replies, by the kind of the plain ones they stand for.
_PLAIN_KIND = {
    b"smessage": b"message",
    b"ssubscribe": b"subscribe",
    b"sunsubscribe": b"unsubscribe",
}


class Moved(RedisConnectionError):
    """Redis unsubscribed a channel held here: its Cluster slot moved to another node."""


def tagged(prefix: str, name: str) -> str:
    """`prefix{name}`: the hash tag keeps a channel's keys in one Cluster slot."""
    return prefix + "{" + name + "}"


def decode_live(payload: bytes) -> Message:
    """A pub/sub payload as the publish script builds it: "<id>\n<event>\n<data>"."""
    message_id, event, data = payload.decode().split("\n", 2)
    return make_message(message_id, event, data)


class _Channel:
    __slots__ = ("idle_since", "position", "ready", "subscribed")

    def __init__(self) -> None:
        #: The newest id delivered here; None until the channel is first located.
        self.position: Key | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        #: Confirmed on the current connection.
        self.subscribed = False
        #: Loop time the last local subscriber left; None while it has any.
        self.idle_since: float | None = None


class LiveChannels:
    def __init__(
        self,
        *,
        redis: Redis,
        prefix: str,
        deliver: Callable[[str, Sequence[Message]], None],
        fill: Fill,
        newest: Newest,
        on_gap: Callable[[str], None],
        on_lost: Callable[[BaseException], None],
        on_back: Callable[[], None],
        sharded: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        #: SSUBSCRIBE (Cluster: the messages of a slot stay on its node), not SUBSCRIBE.
        self.sharded = sharded
        self.deliver = deliver
        self.fill = fill
        self.newest = newest
        self.on_gap = on_gap
        self.on_lost = on_lost
        self.on_back = on_back
        self.channels: dict[str, _Channel] = {}
        #: Set while the subscription connection is up and every channel caught up.
        self.up = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._send_lock = asyncio.Lock()
        self._to_subscribe: list[str] = []
        self._to_locate: list[str] = []
        #: While a reconnect fills the gaps: live messages that arrived meanwhile.
        self._buffer: list[Any] | None = None
        #: The channels a reconnect subscribes again (and locates or fills itself).
        self._resyncing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        #: The connection is being made again on purpose (resubscribe), not lost.
        self._restarting = False

    # -- what the broker calls -----------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="redis-live")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._main] if self._main else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.disconnect(nowait=True)

    def acquire(self, name: str) -> None:
        channel = self.channels.get(name)
        if channel is None:
            self.channels[name] = _Channel()
            self._to_subscribe.append(name)
            if len(self._to_subscribe) == 1:
                asyncio.get_running_loop().call_soon(self._spawn, self._subscribe_pending())
        else:
            channel.idle_since = None

    def release(self, name: str) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            channel.idle_since = asyncio.get_running_loop().time()

    def hand_over(self, name: str, other: LiveChannels) -> None:
        """Move a channel to another connection (its Cluster slot moved there) with the
        id it last delivered; `other.resubscribe()` then fills its gap from that id."""
        channel = self.channels.pop(name)
        channel.subscribed = False
        other.channels[name] = channel

    async def resubscribe(self) -> None:
        """Make the connection again: every channel is subscribed and its gap filled, as
        after a loss (for channels just moved here from another node)."""
        if self._connection is not None:
            self._restarting = True
            await self._connection.disconnect(nowait=True)

    async def ready(self, name: str) -> Key:
        channel = self.channels[name]
        try:
            await asyncio.wait_for(asyncio.shield(channel.ready), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise BrokerUnavailable("the channel could not be subscribed in Redis") from None
        assert channel.position is not None
        return channel.position

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                connection = await self._connect()
            except (*LOST, RedisError) as exc:
                self.on_lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            try:
                await self._serve(connection)
            except (Moved, MovedError) as exc:  # the Cluster's slots changed
                self.up.clear()
                self.on_lost(exc)
                await asyncio.sleep(delay)
            except LOST as exc:
                self.up.clear()
                if not self._restarting:
                    self.on_lost(exc)
            except RedisError as exc:  # a refused command (e.g. ACL): log it, start again
                self.up.clear()
                log.error("the Redis subscription connection failed: %s", exc)
                self.on_lost(exc)
                await asyncio.sleep(1.0)
            finally:
                self.up.clear()
                self._restarting = False
                self._connection = None
                self._buffer = None
                for channel in self.channels.values():
                    channel.subscribed = False
                await connection.disconnect(nowait=True)

    async def _connect(self) -> AbstractConnection:
        pool = self.redis.connection_pool
        # Its own connection, outside the pool: RESP2 (pub/sub messages are plain replies),
        # no retry of its own (a lost connection is made again here, with the gaps filled).
        # (Maintenance notifications need RESP3: left out.)
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if "maint" not in k}
        kwargs.update(protocol=2, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0)
        connection = pool.connection_class(**kwargs)
        await connection.connect()
        return connection

    async def _serve(self, connection: AbstractConnection) -> None:
        self._connection = connection
        names = list(self.channels)
        self._buffer = []
        self._resyncing = set(names)
        waiting = set(names)
        await self._change("SUBSCRIBE", names)
        while waiting:
            reply = await self._read(connection)
            if _PLAIN_KIND.get(reply[0], reply[0]) == b"subscribe":
                waiting.discard(self._name(reply[1]))
            self._handle(reply)
        await self._resync(names)
        buffered, self._buffer, self._resyncing = self._buffer, None, set()
        for reply in buffered:
            self._handle(reply)
        self.up.set()
        self.on_back()
        keeper = asyncio.create_task(self._keep(connection))
        try:
            while True:
                self._handle(await self._read(connection))
        finally:
            keeper.cancel()

    async def _read(self, connection: AbstractConnection) -> Any:
        """The next reply; none for SILENCE seconds, not even a PONG: the connection is dead.

        (redis-py returns None when a read's own timeout passes, rather than raising.)
        """
        reply = await connection.read_response(timeout=SILENCE)
        if reply is None:
            raise RedisTimeoutError(f"nothing heard from Redis for {SILENCE:g} s")
        return reply

    async def _resync(self, names: list[str]) -> None:
        """After a reconnect: fill each channel's gap, from the id it last delivered."""
        known = [name for name in names if self.channels[name].position is not None]
        await self._locate([name for name in names if self.channels[name].position is None])
        for start in range(0, len(known), FILL_AT_ONCE):
            part = known[start : start + FILL_AT_ONCE]
            await asyncio.gather(*(self._fill(name) for name in part))

    async def _fill(self, name: str) -> None:
        channel = self.channels.get(name)
        if channel is None or channel.position is None:
            return
        missed = await self.fill(name, channel.position)
        if missed is None:
            self.on_gap(name)
        elif missed:
            channel.position = missed[-1].key
            self.deliver(name, missed)

    async def _keep(self, connection: AbstractConnection) -> None:
        """PING the connection (a silent one is dead) and unsubscribe idle channels."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_EVERY)
            idle_before = loop.time() - LINGER
            idle = [
                name
                for name, channel in self.channels.items()
                if channel.idle_since is not None
                and channel.idle_since < idle_before
                and channel.subscribed
                and channel.ready.done()
            ]
            for name in idle:
                del self.channels[name]
            try:
                await self._change("UNSUBSCRIBE", idle)
                await self._send(("PING",))
            except LOST:
                await connection.disconnect(nowait=True)  # the reader sees it and reconnects
                return

    async def _change(self, verb: str, names: Sequence[str]) -> None:
        """SUBSCRIBE or UNSUBSCRIBE `names`, at most BATCH in a command; sharded, in one
        command per hash slot (Redis refuses an SSUBSCRIBE across slots)."""
        groups: dict[int, list[str]] = defaultdict(list)
        for name in names:
            groups[key_slot(self._pubsub(name).encode()) if self.sharded else 0].append(name)
        verb = "S" + verb if self.sharded else verb
        await self._send(
            *(
                (verb, *(self._pubsub(name) for name in group[start : start + BATCH]))
                for group in groups.values()
                for start in range(0, len(group), BATCH)
            )
        )

    async def _send(self, *commands: tuple[str, ...]) -> None:
        """Send the commands in one write."""
        connection = self._connection
        if connection is None or not commands:
            return  # the next connection subscribes every channel anyway
        async with self._send_lock:
            packed = connection.pack_commands(commands)
            await connection.send_packed_command(packed, check_health=False)

    def _pubsub(self, name: str) -> str:
        return tagged(self.prefix, name)

    def _name(self, pubsub: bytes) -> str:
        return pubsub.decode()[len(self.prefix) + 1 : -1]

    # -- replies -------------------------------------------------------------------------

    def _handle(self, reply: Any) -> None:
        kind = _PLAIN_KIND.get(reply[0], reply[0])
        if kind == b"message":
            if self._buffer is not None:
                self._buffer.append(reply)
                return
            name = self._name(reply[1])
            channel = self.channels.get(name)
            if channel is None:
                return
            message = decode_live(reply[2])
            if channel.position is not None and message.key <= channel.position:
                return  # already delivered (by the gap fill after a reconnect)
            channel.position = message.key
            self.deliver(name, (message,))
        elif kind == b"subscribe":
            name = self._name(reply[1])
            channel = self.channels.get(name)
            if channel is not None:
                channel.subscribed = True
                if not channel.ready.done() and name not in self._resyncing:
                    self._to_locate.append(name)
                    if len(self._to_locate) == 1:
                        asyncio.get_running_loop().call_soon(self._spawn, self._locate_pending())
        elif kind == b"unsubscribe":
            channel = self.channels.get(self._name(reply[1]))
            # Not one this worker left (those are gone from `channels` first): Redis
            # dropped it, as a Cluster node does when the channel's slot moves away.
            if channel is not None and channel.subscribed:
                raise Moved(f"{reply[1].decode()} was unsubscribed by Redis")

    async def _subscribe_pending(self) -> None:
        names = [name for name in self._to_subscribe if name in self.channels]
        self._to_subscribe = []
        # Lost: the reader sees it, and the next connection subscribes them.
        with contextlib.suppress(LOST):
            await self._change("SUBSCRIBE", names)

    async def _locate_pending(self) -> None:
        names, self._to_locate = self._to_locate, []
        try:
            await self._locate(names)
        except (*LOST, RedisError) as exc:
            log.warning("reading the newest ids of %d channels failed: %s", len(names), exc)
            if self._connection is not None:  # start again: the reconnect locates them
                await self._connection.disconnect(nowait=True)

    async def _locate(self, names: list[str]) -> None:
        """Learn where each channel ends, and let its subscribers in."""
        for start in range(0, len(names), BATCH):
            part = names[start : start + BATCH]
            for name, newest in zip(part, await self.newest(part), strict=True):
                channel = self.channels.get(name)
                if channel is None:
                    continue
                if channel.position is None or channel.position < newest:
                    channel.position = newest
                if not channel.ready.done():
                    channel.ready.set_result(None)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
