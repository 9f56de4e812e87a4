"""The Redis broker on a three-master Redis Cluster started by the test session.

Channels are picked so that their slots land on every master; subscribers resume by
Last-Event-ID on two workers (two brokers) while messages are published; a slot is
moved to another master mid-run; on a cluster of its own with replicas, a master is
killed. Each subscriber must get every acknowledged message after its id exactly once,
in order; connections per master stay bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from {{ cookiecutter.project_slug }}.broker import BrokerUnavailable, create_broker, parse_id
from {{ cookiecutter.project_slug }}.broker.redis import POOL, live_key, stream_key
from {{ cookiecutter.project_slug }}.broker.redis_cluster import SPARE, RedisClusterBroker
from {{ cookiecutter.project_slug }}.channels import follow
from {{ cookiecutter.project_slug }}.delivery import ReceiveStream
from {{ cookiecutter.project_slug }}.settings import Settings, load_settings

from redis_cluster import RedisClusterServers, redis_cluster
from sse_client import new_channel

T = TypeVar("T")
_ID = re.compile(rb"^id: (\S+)$", re.MULTILINE)


async def never() -> dict[str, object]:
    await asyncio.Future()
    raise AssertionError


class Reader:
    """One subscriber: runs `follow()` and keeps the ids it wrote, as a response would."""

    def __init__(self, broker: RedisClusterBroker, channel: str, after: str) -> None:
        self.stream = ReceiveStream(never, 100_000)
        self.chunks: AsyncIterator[bytes] = follow(
            self.stream, broker=broker, channel=channel, after=after
        )
        self.channel = channel
        self.after = after
        self.ids: list[str] = []

    async def run(self) -> None:
        async with aclosing(self.chunks) as chunks:
            async for chunk in chunks:
                self.ids.extend(each.decode() for each in _ID.findall(chunk))


class Follower:
    """A subscriber that, like an EventSource, resumes by its last id when its stream ends."""

    def __init__(self, broker: RedisClusterBroker, channel: str, after: str) -> None:
        self.broker = broker
        self.channel = channel
        self.after = after
        self.ids: list[str] = []
        self.resumed = 0
        self.reader = Reader(broker, channel, after)
        self.closed = False

    async def run(self) -> None:
        while True:
            await self.reader.run()
            self.ids.extend(self.reader.ids)
            if self.closed:
                return
            self.resumed += 1
            await asyncio.sleep(0.2)  # as a client's retry
            self.reader = Reader(
                self.broker, self.channel, self.ids[-1] if self.ids else self.after
            )

    def close(self) -> None:
        self.closed = True
        self.reader.stream.close("gone")


def broker_on(cluster: RedisClusterServers) -> RedisClusterBroker:
    broker = create_broker(Settings(redis_url=cluster.url, redis_cluster=True, history_size=5000))
    assert isinstance(broker, RedisClusterBroker)
    return broker


def with_workers(
    cluster: RedisClusterServers,
    test: Callable[[list[RedisClusterBroker]], Awaitable[T]],
    workers: int = 2,
) -> T:
    async def run() -> T:
        brokers = [broker_on(cluster) for _ in range(workers)]
        for broker in brokers:
            await broker.start()
        try:
            return await asyncio.wait_for(test(brokers), 60)
        finally:
            for broker in brokers:
                await broker.stop()

    return asyncio.run(run())


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - polling on purpose
        await asyncio.sleep(0.02)


async def master_of(cluster: RedisClusterServers, channel: str) -> int:
    """The port of the master serving the channel's slot, as the cluster says now."""
    async with RedisCluster.from_url(f"redis://127.0.0.1:{cluster.alive()[0]}") as client:
        node = client.get_node_from_key(stream_key(channel))
        assert node is not None
        return int(node.port)


def spread_channels(cluster: RedisClusterServers, per_master: int) -> dict[int, list[str]]:
    """Fresh channels, `per_master` of them on each master (by port)."""

    async def pick() -> dict[int, list[str]]:
        by_master: dict[int, list[str]] = {port: [] for port in cluster.ports}
        async with RedisCluster.from_url(cluster.url) as client:
            while any(len(names) < per_master for names in by_master.values()):
                name = new_channel()
                node = client.get_node_from_key(stream_key(name))
                assert node is not None
                if len(by_master[int(node.port)]) < per_master:
                    by_master[int(node.port)].append(name)
        return by_master

    return asyncio.run(pick())


def check_exact(published: dict[str, list[str]], readers: Sequence[Reader | Follower]) -> None:
    wrong = []
    for reader in readers:
        in_order = sorted(published[reader.channel], key=parse_id)
        expected = [each for each in in_order if parse_id(each) > parse_id(reader.after)]
        if reader.ids != expected:
            wrong.append((reader.channel, reader.after, len(reader.ids), len(expected)))
    assert not wrong, f"{len(wrong)} of {len(readers)} subscribers got a wrong sequence: {wrong}"


def test_a_channels_keys_share_one_slot_whatever_its_name():
    # Channel names never hold braces (channels.py), so the tag is the whole name.
    for name in ("a", "user.ann", "private.team-1", "x" * 64):
        assert key_slot(stream_key(name).encode()) == key_slot(live_key(name).encode())


@pytest.mark.slow
def test_channels_on_every_master_reach_subscribers_on_two_workers_once_in_order(
    redis_cluster_db: RedisClusterServers,
):
    """Two channels on each master; three subscribers each, on two workers, resuming by
    Last-Event-ID while both workers publish: each gets exactly what followed its id."""
    by_master = spread_channels(redis_cluster_db, per_master=2)
    assert len(by_master) == 3 and all(len(names) == 2 for names in by_master.values())
    channels = [name for names in by_master.values() for name in names]
    total = 300

    async def test(brokers: list[RedisClusterBroker]) -> tuple[dict[str, list[str]], list[Reader]]:
        published: dict[str, list[str]] = {name: [] for name in channels}

        async def publish(channel: str) -> None:
            for n in range(total):
                broker = brokers[n % 2]
                published[channel].append(await broker.publish(channel, "message", f"m{n}"))
                if n % 10 == 0:
                    await asyncio.sleep(0.005)

        publishers = [asyncio.create_task(publish(channel)) for channel in channels]
        await until(lambda: all(len(ids) >= 50 for ids in published.values()))
        readers = []
        for index, channel in enumerate(channels):
            for k, back in enumerate((1, 20, 45)):
                after = published[channel][len(published[channel]) - back]
                readers.append(Reader(brokers[(index + k) % 2], channel, after))
        tasks = [asyncio.create_task(reader.run()) for reader in readers]
        await asyncio.gather(*publishers)
        last = {channel: max(ids, key=parse_id) for channel, ids in published.items()}
        await until(lambda: all(r.ids[-1:] == [last[r.channel]] for r in readers))
        for reader in readers:
            reader.stream.close("gone")
        await asyncio.gather(*tasks)
        return published, readers

    published, readers = with_workers(redis_cluster_db, test)
    check_exact(published, readers)


async def move_slot(cluster: RedisClusterServers, slot: int, source: int, target: int) -> None:
    """Migrate `slot` with its keys from one master to another, as `redis-cli --cluster
    reshard` does, and tell every master its new owner."""
    nodes = {port: Redis(host="127.0.0.1", port=port) for port in cluster.ports}
    try:
        ids = {
            port: (await node.execute_command("CLUSTER", "MYID")).decode()
            for port, node in nodes.items()
        }
        await nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        await nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := await nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await nodes[source].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
        for port in (target, source, *(p for p in cluster.ports if p not in (source, target))):
            await nodes[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for node in nodes.values():
            await node.aclose()


@pytest.mark.slow
def test_a_slot_moved_to_another_master_mid_run_loses_and_repeats_nothing(
    redis_cluster_db: RedisClusterServers,
):
    """While messages are published, the channel's slot (its stream with it) moves to
    another master: Redis unsubscribes the channel there, the workers re-read the slots
    and subscribe on the new master, the gap filled from history. Every acknowledged
    message reaches every subscriber once, in order, and live delivery goes on."""
    channel = new_channel()
    slot = key_slot(stream_key(channel).encode())

    async def test(brokers: list[RedisClusterBroker]) -> tuple[dict[str, list[str]], list[Reader]]:
        source = await master_of(redis_cluster_db, channel)
        target = next(port for port in redis_cluster_db.ports if port != source)
        acknowledged: list[str] = [await brokers[0].publish(channel, "message", "first")]
        readers = [Reader(broker, channel, acknowledged[0]) for broker in brokers for _ in "ab"]
        tasks = [asyncio.create_task(reader.run()) for reader in readers]
        refused = 0

        async def publish(count: int) -> None:
            nonlocal refused
            for n in range(count):
                try:
                    acknowledged.append(await brokers[n % 2].publish(channel, "message", "x"))
                except BrokerUnavailable:  # during the move: retryable, not acknowledged
                    refused += 1
                await asyncio.sleep(0.002)

        publishing = asyncio.create_task(publish(600))
        await until(lambda: len(acknowledged) > 150)
        await move_slot(redis_cluster_db, slot, source, target)
        await publishing
        assert await master_of(redis_cluster_db, channel) == target
        # After the move, live delivery comes from the new master.
        await publish(50)
        await until(lambda: all(reader.ids[-1:] == acknowledged[-1:] for reader in readers))
        async with Redis(host="127.0.0.1", port=target) as admin:
            reply = await admin.execute_command("PUBSUB", "SHARDNUMSUB", live_key(channel))
        assert reply[1] == len(brokers), "each worker subscribed on the new master"
        for reader in readers:
            reader.stream.close("gone")
        await asyncio.gather(*tasks)
        assert refused < 100, f"{refused} publishes refused during the move"
        return {channel: acknowledged}, readers

    published, readers = with_workers(redis_cluster_db, test)
    check_exact(published, readers)
    redis_cluster_db.wait_until_ok()


def test_connections_per_master_stay_few_however_many_channels(
    redis_cluster_db: RedisClusterServers,
):
    """300 channels on one worker: on each master at most POOL + SPARE command
    connections and one for live delivery."""
    channels = [new_channel() for _ in range(300)]

    async def clients() -> dict[int, int]:
        counts = {}
        for port in redis_cluster_db.ports:
            async with Redis(host="127.0.0.1", port=port) as admin:
                counts[port] = int((await admin.info("clients"))["connected_clients"]) - 1
        return counts

    async def test(brokers: list[RedisClusterBroker]) -> tuple[dict[int, int], list[Reader]]:
        (broker,) = brokers
        firsts = await asyncio.gather(*(broker.publish(c, "message", "0") for c in channels))
        readers = [Reader(broker, c, first) for c, first in zip(channels, firsts, strict=True)]
        tasks = [asyncio.create_task(reader.run()) for reader in readers]
        ids = await asyncio.gather(*(broker.publish(c, "message", "1") for c in channels))
        await until(lambda: all(r.ids == [i] for r, i in zip(readers, ids, strict=True)))
        counts = await clients()
        for reader in readers:
            reader.stream.close("gone")
        await asyncio.gather(*tasks)
        return counts, readers

    before = asyncio.run(clients())
    during, readers = with_workers(redis_cluster_db, test, workers=1)
    assert all(len(reader.ids) == 1 for reader in readers)
    held = {port: during[port] - before[port] for port in during}
    assert all(0 < count <= POOL + SPARE + 1 for count in held.values()), held


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("unix:///run/redis.sock", "reached over TCP"),
        ("redis://127.0.0.1:7000/2", "only database 0"),
    ],
)
def test_a_cluster_url_that_cannot_work_is_one_readable_error(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
):
    monkeypatch.setenv("SSE_REDIS_URL", url)
    monkeypatch.setenv("SSE_REDIS_CLUSTER", "1")
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert str(exited.value).startswith("Invalid settings: SSE_REDIS_CLUSTER=")
    assert reason in str(exited.value) and "; " not in str(exited.value)


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("SSE_REDIS_SENTINELS", "127.0.0.1:26379", "fails over by itself"),
        ("SSE_REDIS_WAIT_REPLICAS", "1", "not a Redis Cluster"),
    ],
)
def test_a_cluster_refuses_the_single_master_settings(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, reason: str
):
    """Sentinels and WAIT would be silently ignored on a cluster: refused at start-up."""
    monkeypatch.setenv("SSE_REDIS_URL", "redis://127.0.0.1:7000")
    monkeypatch.setenv("SSE_REDIS_CLUSTER", "1")
    monkeypatch.setenv(setting, value)
    if setting == "SSE_REDIS_SENTINELS":
        monkeypatch.setenv("SSE_REDIS_SENTINEL_MASTER", "channels")
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert str(exited.value).startswith("Invalid settings: SSE_REDIS_CLUSTER=")
    assert reason in str(exited.value)


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """Three masters with a replica each, for one test (it kills a master). A replica
    takes over some seconds after the node timeout, so past the workers' 5 s grace."""
    with redis_cluster(tmp_path, "--cluster-node-timeout", "5000", replicas=1) as cluster:
        yield cluster


async def replicated(cluster: RedisClusterServers, master: int, replica: int) -> bool:
    async with (
        Redis(host="127.0.0.1", port=master) as a,
        Redis(host="127.0.0.1", port=replica) as b,
    ):
        ahead = (await a.info("replication"))["master_repl_offset"]
        return int((await b.info("replication"))["slave_repl_offset"]) >= int(ahead)


@pytest.mark.slow
def test_a_master_killed_its_replica_takes_over_and_nothing_acknowledged_is_lost(
    cluster_with_replicas: RedisClusterServers,
):
    """SIGKILL the master of one channel while two workers publish to it and to a channel
    on another master: its replica takes over, the workers find it, subscribe there and
    fill the gap. The failover takes longer than the workers wait, so the streams of the
    lost master's channel end and resume by their last id; the other master's stay open.
    Every subscriber gets every acknowledged message once, in order."""
    cluster = cluster_with_replicas
    by_master = spread_channels(cluster, per_master=1)
    doomed_master = cluster.ports[0]
    doomed, spared = by_master[doomed_master][0], by_master[cluster.ports[1]][0]
    replica = cluster.replica_of(doomed_master)

    async def test(
        brokers: list[RedisClusterBroker],
    ) -> tuple[dict[str, list[str]], list[Follower]]:
        acknowledged = {
            ch: [await brokers[0].publish(ch, "message", "0")] for ch in (doomed, spared)
        }
        followers = [Follower(b, ch, ids[0]) for b in brokers for ch, ids in acknowledged.items()]
        tasks = [asyncio.create_task(follower.run()) for follower in followers]
        publishing, stop = asyncio.Event(), False

        async def publish(channel: str) -> None:
            n = 0
            while not stop:
                await publishing.wait()
                # BrokerUnavailable while the master is away: retryable, not acknowledged.
                with contextlib.suppress(BrokerUnavailable):
                    acknowledged[channel].append(
                        await brokers[n % 2].publish(channel, "message", "x")
                    )
                n += 1
                await asyncio.sleep(0.005)

        publishing.set()
        publishers = [asyncio.create_task(publish(channel)) for channel in acknowledged]
        await until(lambda: all(len(ids) > 100 for ids in acknowledged.values()))
        # Replication is asynchronous: kill the master once its replica has everything
        # acknowledged, so that a loss could only be the workers'.
        publishing.clear()
        await asyncio.sleep(0.1)
        await until_true(lambda: replicated(cluster, doomed_master, replica))
        before = len(acknowledged[doomed])
        cluster.kill(doomed_master)
        publishing.set()
        await until(lambda: len(acknowledged[doomed]) > before + 100, timeout=30)
        stop = True
        await asyncio.gather(*publishers)
        assert await master_of(cluster, doomed) == replica
        await until(
            lambda: all(f.reader.ids[-1:] == acknowledged[f.channel][-1:] for f in followers)
        )
        async with Redis(host="127.0.0.1", port=replica) as admin:
            reply = await admin.execute_command("PUBSUB", "SHARDNUMSUB", live_key(doomed))
        assert reply[1] == len(brokers), "each worker subscribed on the new master"
        for follower in followers:
            follower.close()
        await asyncio.gather(*tasks)
        return acknowledged, followers

    published, followers = with_workers(cluster, test)
    check_exact(published, followers)
    assert all(f.resumed == 0 for f in followers if f.channel == spared), "spared streams ended"
    assert all(f.resumed > 0 for f in followers if f.channel == doomed)


async def until_true(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)
