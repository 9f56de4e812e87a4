"""The Redis broker on a Redis Cluster (SSE_REDIS_CLUSTER=1): one live connection per master.

- Keys: a channel's stream and its live channel carry the same `{name}` hash tag
  (redis.py), so both are in one slot and the publish script (XADD, then SPUBLISH)
  runs on that slot's master. Commands go through redis-py's asyncio `RedisCluster`,
  which follows MOVED and ASK redirections and re-reads the slots when they change.
- Live delivery is sharded pub/sub (Redis 7): a message published with SPUBLISH stays
  on its shard. Plain PUBLISH on a cluster is broadcast over the cluster bus, so every
  node would carry every message of every channel (the README compares the two). A
  worker holds one subscription connection per master, a sharded `LiveChannels` for the
  channels whose slots that master serves.
- The slots change (a slot migrated: Redis unsubscribes its channels; a master is lost
  and its replica promoted; an SSUBSCRIBE answered MOVED): the slots are read again,
  each channel moves to the connection of its new master, and that connection is made
  again, every channel subscribed and its gap filled from the id it last delivered, as
  after any lost connection.
- Connections per worker and master: at most POOL for commands (a semaphore: redis-py's
  cluster client raises instead of waiting when a node's pool is full), one or two more
  while the slots are read again, and one for live delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    ClusterError,
    MovedError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from .base import BrokerUnavailable
from .messages import Key, Message, Page
from .redis import LIVE_PREFIX, POOL, RedisBroker, live_key
from .redis_live import LOST, Fill, LiveChannels, Moved, Newest

log = logging.getLogger(__name__)

#: Connections a node's pool may open beyond POOL: re-reading the slots takes one.
SPARE = 2
#: Seconds between two readings of the slots when one more was asked for meanwhile.
AGAIN_AFTER = 0.1
#: A cluster that cannot serve right now (a master lost and not yet replaced).
UNSERVED = (RedisClusterException, ClusterError, TryAgainError)

# As redis.py's, with SPUBLISH: the message is delivered by the channel's master only.
PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'event', ARGV[2], 'data', ARGV[3])
redis.call('SPUBLISH', ARGV[4], id .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return id
"""


class RedisClusterBroker(RedisBroker):
    name = "redis"
    publish_script = PUBLISH

    def __init__(
        self, *, url: str, history_size: int, replay_max_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self._commands = asyncio.Semaphore(POOL)
        super().__init__(url=url, history_size=history_size, replay_max_bytes=replay_max_bytes)

    def _client(  # type: ignore[override]
        self, url: str, sentinels: Sequence[tuple[str, int]], master: str
    ) -> tuple[RedisCluster, str]:
        # A cluster fails over by itself; settings refuse sentinels with it.
        cluster = RedisCluster.from_url(
            url,
            max_connections=POOL + SPARE,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
        )
        # Where the cluster is, for messages; never the URL, which may hold a password.
        seed = urlsplit(url)
        return cluster, f"{seed.hostname}:{seed.port or 6379} (Redis Cluster)"

    def _live_channels(self) -> ClusterLive:  # type: ignore[override]
        return ClusterLive(
            cluster=self.redis,
            deliver=self._deliver,
            fill=self._fill,
            newest=self._newest,
            on_gap=self._gap,
            on_lost=self._lost,
            on_back=self._back,
        )

    async def stop(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
        await self.live.stop()
        await self.redis.aclose()

    def _end_streams(self) -> None:
        # Only the streams of channels whose master is still away: the others go on.
        self._outage = None
        cut_off = self.live.cut_off()
        if cut_off:
            log.warning("%d channels' master is still away: ending their streams", len(cut_off))
        for name in cut_off:
            subscribers = self.local.get(name)
            if subscribers is not None:
                subscribers.close_all("broker")

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of POOL turns for a command, so no node's pool is asked for more. A
        cluster that cannot serve now (CLUSTERDOWN, TRYAGAIN; no node answers or a slot
        has no master, which redis-py raises outside RedisError) is Redis unreachable."""
        async with self._commands:
            try:
                yield
            except UNSERVED as exc:
                raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def check(self) -> str | None:
        try:
            async with self._turn():
                return await super().check()
        except RedisConnectionError as exc:
            return f"Redis at {self.where} is unreachable: {exc}"

    async def publish(self, channel: str, event: str, data: str) -> str:
        try:
            async with self._turn():
                return await super().publish(channel, event, data)
        except RedisConnectionError as exc:
            raise BrokerUnavailable(f"Redis at {self.where} is unreachable") from exc

    async def _page(self, channel: str, after: str, count: int) -> Page:
        async with self._turn():
            return await super()._page(channel, after, count)

    async def _newest(self, channels: Sequence[str]) -> list[Key]:
        async with self._turn():
            return await super()._newest(channels)


class ClusterLive:
    """What the broker asks of `LiveChannels`, over a sharded one per master."""

    def __init__(
        self,
        *,
        cluster: RedisCluster,
        deliver: Callable[[str, Sequence[Message]], None],
        fill: Fill,
        newest: Newest,
        on_gap: Callable[[str], None],
        on_lost: Callable[[BaseException], None],
        on_back: Callable[[], None],
    ) -> None:
        self.cluster = cluster
        self._deliver = deliver
        self._fill = fill
        self._newest = newest
        self._on_gap = on_gap
        self.on_lost = on_lost
        self.on_back = on_back
        #: Live delivery per master, by node name (host:port).
        self.nodes: dict[str, LiveChannels] = {}
        #: Set while every master's connection is up and its channels caught up.
        self.up = asyncio.Event()
        self._refreshing: asyncio.Task[None] | None = None
        self._again = False

    def start(self) -> None:
        for node in self.cluster.get_primaries():
            self._add(node)

    async def stop(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        await asyncio.gather(*(live.stop() for live in self.nodes.values()))

    def acquire(self, name: str) -> None:
        live = self._holder(name)
        if live is None:
            # A slot no master serves right now: wait on any; the refresh moves it.
            live = self.nodes[self._owner(name) or next(iter(self.nodes))]
        live.acquire(name)

    def release(self, name: str) -> None:
        live = self._holder(name)
        if live is not None:
            live.release(name)

    async def ready(self, name: str) -> Key:
        live = self._holder(name)
        assert live is not None, "ready() before acquire()"
        return await live.ready(name)

    def cut_off(self) -> list[str]:
        """The channels held on a master whose connection is down."""
        down = [live for live in self.nodes.values() if not live.up.is_set()]
        return [name for live in down for name in live.channels]

    # -- masters -------------------------------------------------------------------------

    def _add(self, node: ClusterNode) -> LiveChannels:
        # A pool with the node's address and credentials, from which LiveChannels makes
        # its own connection (it never hands out pooled ones).
        pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        live = LiveChannels(
            redis=Redis(connection_pool=pool),
            prefix=LIVE_PREFIX,
            deliver=self._deliver,
            fill=self._fill,
            newest=self._newest,
            on_gap=self._on_gap,
            on_lost=partial(self._lost, node.name),
            on_back=self._back,
            sharded=True,
        )
        self.nodes[node.name] = live
        live.start()
        return live

    def _holder(self, name: str) -> LiveChannels | None:
        """The connection the channel is subscribed on (or waits for)."""
        for live in self.nodes.values():
            if name in live.channels:
                return live
        return None

    def _owner(self, name: str) -> str | None:
        """The master that serves the channel's slot, as last read (its connection made);
        None while no master does (the slots are then read again)."""
        try:
            node = self.cluster.get_node_from_key(live_key(name))
        except RedisClusterException:
            node = None
        if node is None:
            self.refresh()
            return None
        if node.name not in self.nodes:
            self._add(node)
        return node.name

    def _lost(self, master: str, exc: BaseException) -> None:
        if not isinstance(exc, (Moved, MovedError)):  # a move is no outage
            self.up.clear()
            self.on_lost(RedisConnectionError(f"master {master}: {exc}"))
        self.refresh()

    def _back(self) -> None:
        if all(live.up.is_set() for live in self.nodes.values()) and not self.up.is_set():
            self.up.set()
            self.on_back()

    # -- the slots changed ---------------------------------------------------------------

    def refresh(self) -> None:
        """Read the slots again and move each channel to its master (one run at a time)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(), name="redis-cluster-slots")
        else:
            self._again = True

    async def _refresh(self) -> None:
        while True:
            self._again = False
            try:
                await self.cluster.nodes_manager.initialize()
            except (*LOST, RedisError, RedisClusterException) as exc:
                # Tried again on the next loss a master's connection reports.
                log.warning("reading the Redis Cluster's slots failed: %s", exc)
                return
            await self._move()
            if not self._again:
                return
            await asyncio.sleep(AGAIN_AFTER)  # asked again meanwhile: not in a tight loop

    async def _move(self) -> None:
        masters = {node.name for node in self.cluster.get_primaries()}
        arrived: set[str] = set()
        for held_by, holder in list(self.nodes.items()):
            for name in list(holder.channels):
                owner = self._owner(name)
                if owner is not None and owner != held_by:
                    holder.hand_over(name, self.nodes[owner])
                    arrived.add(owner)
        await asyncio.gather(*(self.nodes[name].resubscribe() for name in arrived))
        for name in [name for name, live in self.nodes.items() if name not in masters]:
            if not self.nodes[name].channels:  # no longer a master, and nothing left there
                await self.nodes.pop(name).stop()
        self._back()
