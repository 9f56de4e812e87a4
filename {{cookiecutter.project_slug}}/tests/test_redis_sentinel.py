"""Redis Sentinel and durable acknowledgement (WAIT): a failover loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError
from uvicorn_process import uvicorn_process

from {{ cookiecutter.project_slug }}.broker import BrokerUnavailable, parse_id
from {{ cookiecutter.project_slug }}.broker.redis import RedisBroker, stream_key
from {{ cookiecutter.project_slug }}.settings import Settings, load_settings, sentinel_addresses

from conftest import run_server
from redis_server import RedisServer, free_port, redis_server
from sse_client import Event, Subscription, new_channel, publish, subscribe, wait_for

MASTER = "sse"
#: Redis data nodes: no persistence, so only replication keeps a message.
DATA = ("--appendonly", "no")

# -- settings ------------------------------------------------------------------------------


def test_sentinel_addresses_are_parsed():
    assert sentinel_addresses("10.0.0.5:26379, sentinel-b:26380,[::1]:26381") == [
        ("10.0.0.5", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    ]
    assert sentinel_addresses("") == []


SENTINELS = "SSE_REDIS_SENTINELS"
NAME = "SSE_REDIS_SENTINEL_MASTER"


@pytest.mark.parametrize(
    ("variables", "named", "reason"),
    [
        ({SENTINELS: "127.0.0.1:26379"}, NAME, "is set: name the master too"),
        ({NAME: MASTER}, NAME, "a master name needs SSE_REDIS_SENTINELS"),
        ({SENTINELS: "sentinel-a", NAME: MASTER}, SENTINELS, "'sentinel-a' is not host:port"),
        ({SENTINELS: "a:1,b:99999", NAME: MASTER}, SENTINELS, "'b:99999' is not host:port"),
        ({SENTINELS: ":26379", NAME: MASTER}, SENTINELS, "':26379' is not host:port"),
        ({SENTINELS: " , ", NAME: MASTER}, SENTINELS, "no sentinel address"),
        (
            {SENTINELS: "a:1", NAME: MASTER, "SSE_REDIS_URL": "unix:///run/redis.sock"},
            NAME,
            "cannot be unix://",
        ),
        ({"SSE_REDIS_WAIT_REPLICAS": "-1"}, "SSE_REDIS_WAIT_REPLICAS", "greater than or equal"),
        ({"SSE_REDIS_WAIT_TIMEOUT": "5"}, "SSE_REDIS_WAIT_TIMEOUT", "less than or equal to 4"),
    ],
)
def test_a_bad_sentinel_or_wait_setting_is_one_readable_error(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str, reason: str
):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        load_settings()
    message = str(exited.value)
    assert message.count(";") == 0, message  # one problem, reported once
    assert message.startswith(f"Invalid settings: {named}="), message
    assert reason in message


def test_sentinels_and_master_together_are_accepted():
    settings = Settings(redis_sentinels="127.0.0.1:26379", redis_sentinel_master=MASTER)
    assert sentinel_addresses(settings.redis_sentinels) == [("127.0.0.1", 26379)]
    with pytest.raises(ValidationError):
        Settings(redis_sentinels="127.0.0.1:26379")


def test_unreachable_sentinels_refuse_the_start_with_the_reason():
    port = free_port()  # nothing listens there
    broker = RedisBroker(
        url="redis://", history_size=10, sentinels=[("127.0.0.1", port)], master=MASTER
    )

    async def start() -> str:
        try:
            await broker.start()
        except BrokerUnavailable as exc:
            return str(exc)
        finally:
            await broker.stop()
        raise AssertionError("started without a master")

    reason = asyncio.run(start())
    assert reason.startswith(f"cannot reach Redis at master 'sse' of sentinels 127.0.0.1:{port}")
    assert reason.endswith("no sentinel answered with a master that is up")


# -- WAIT ----------------------------------------------------------------------------------


def stream_ids(redis: Redis, channel: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in redis.xrange(stream_key(channel))]


def synced(replica: RedisServer) -> bool:
    with Redis(port=replica.port) as admin:
        return admin.info("replication").get("master_link_status") == "up"


def test_too_few_replicas_is_a_retryable_answer_not_a_201(tmp_path: Path):
    """WAIT=1 with no replica: 503 that says the message may or may not survive."""
    with (
        redis_server(tmp_path, *DATA) as master,
        run_server(
            Settings(redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout=0.2)
        ) as app,
        httpx.Client(timeout=10) as client,
        Redis(port=master.port) as admin,
    ):
        channel = new_channel()
        address = f"{app.url}/channels/{channel}/messages"
        with subscribe(client, app.url, channel) as subscription:
            refused = client.post(address, json={"data": "not durable"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"]
            detail = refused.json()["detail"]
            assert "0 of the 1 replicas required confirmed it within 0.2 s" in detail
            assert "may be lost" in detail and "second copy, with a new id" in detail
            # As the answer says: stored, and delivered, but not on a replica.
            [entry] = stream_ids(admin, channel)
            assert entry in detail
            assert subscription.take(1)[0].id == entry
            # A master that lost its script cache (a replica promoted since) runs it from
            # the source: still one copy, and the same answer.
            admin.script_flush()
            again = client.post(address, json={"data": "again"})
            assert again.status_code == 503 and "0 of the 1 replicas" in again.json()["detail"]
            assert len(stream_ids(admin, channel)) == 2


def test_a_publish_waits_for_the_replica_and_refuses_when_it_lags(tmp_path: Path):
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    follow = ("--replicaof", "127.0.0.1")
    with (
        redis_server(tmp_path / "master", *DATA) as master,
        redis_server(
            tmp_path / "replica", *DATA, *follow, str(master.port), "--enable-debug-command", "yes"
        ) as replica,
        run_server(
            Settings(redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout=1.0)
        ) as app,
        httpx.Client(timeout=10) as client,
        Redis(port=replica.port) as on_replica,
    ):
        assert wait_for(lambda: synced(replica), 10), "the replica did not sync"
        channel = new_channel()
        address = f"{app.url}/channels/{channel}/messages"
        for n in range(3):
            answer = client.post(address, json={"data": f"{n}"})
            assert answer.status_code == 201, answer.text
            # Acknowledged means the replica has it already: no waiting here.
            assert stream_ids(on_replica, channel)[-1] == answer.json()["id"]

        def replica_stalls(seconds: float) -> threading.Thread:
            """The replica stops for `seconds` (still connected: WAIT counts on it)."""

            def sleep() -> None:
                with Redis(port=replica.port) as admin:
                    admin.execute_command("DEBUG", "SLEEP", seconds)

            stall = threading.Thread(target=sleep)
            stall.start()
            time.sleep(0.1)  # the SLEEP has begun
            return stall

        # Stalled for longer than the timeout: refused once the timeout is over.
        stall = replica_stalls(2.0)
        started = time.monotonic()
        refused = client.post(address, json={"data": "lagging"})
        assert refused.status_code == 503 and "0 of the 1 replicas" in refused.json()["detail"]
        assert 0.5 < time.monotonic() - started < 1.9
        stall.join()
        # Stalled for less: the 201 waits until the replica has the message.
        stall = replica_stalls(0.6)
        started = time.monotonic()
        answer = client.post(address, json={"data": "waited"})
        assert answer.status_code == 201, answer.text
        assert time.monotonic() - started > 0.25, "answered before the replica had it"
        stall.join()
        assert stream_ids(on_replica, channel)[-1] == answer.json()["id"]


def test_a_resume_from_a_message_the_new_master_never_had(serve, client: httpx.Client):
    """A subscriber saw a message live that a failover lost: its id is in no history.

    Ids are the master's clock, so what is published after the failover is newer: the
    resume gets all of it; with nothing newer yet, a reset to the newest id, then live.
    """
    app = serve()
    channel = new_channel()
    before = publish(client, app.url, channel, "before")
    lost = f"{parse_id(before)[0] + 1}-0"  # a moment later, on the old master only
    time.sleep(0.01)
    with subscribe(client, app.url, channel, last_id=lost) as resumed:
        assert [(e.event, e.id) for e in resumed.events] == [("reset", before)]
        assert "newer than this channel's last message" in resumed.events[0].data
        after = publish(client, app.url, channel, "after")
        assert resumed.take(1)[0].id == after
    later = publish(client, app.url, channel, "later")
    with subscribe(client, app.url, channel, last_id=lost) as resumed:
        assert [(e.event, e.id) for e in resumed.events] == [("message", after), ("message", later)]


# -- failover ------------------------------------------------------------------------------


@contextmanager
def sentinel(workdir: Path, binary: str, master_port: int) -> Iterator[int]:
    """A `redis-server --sentinel` watching the master, quick to fail it over; its port."""
    workdir.mkdir()
    port = free_port()
    config = workdir / "sentinel.conf"  # Sentinel rewrites it: its own file, in tmp_path
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 5000\n"
    )
    process = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_for(lambda: _answers(port), 10), "the sentinel did not start"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _answers(port: int) -> bool:
    try:
        with Redis(port=port, socket_timeout=1) as probe:
            return bool(probe.ping())
    except RedisError:  # not listening yet
        return False


def watching(port: int, replicas: int) -> bool:
    """The sentinel knows the master, its replicas and the two other sentinels."""
    with Redis(port=port, decode_responses=True) as admin:
        state = admin.sentinel_master(MASTER)
    return state["num-slaves"] == replicas and state["num-other-sentinels"] == 2


class Follower(threading.Thread):
    """A subscriber that resumes by Last-Event-ID whenever its stream ends, like EventSource."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(daemon=True)
        self.address = f"{url}/channels/{channel}/events"
        self.events: list[Event] = []
        self.last_id = "0-0"  # from the start: nothing published is missed
        self.streams = 0
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=httpx.Timeout(10, read=5)) as client:
            while not self.done.is_set() and time.monotonic() < deadline:
                try:
                    headers = {"Last-Event-ID": self.last_id}
                    with client.stream("GET", self.address, headers=headers) as response:
                        self.streams += 1
                        stream = Subscription(response.iter_lines())
                        while not self.done.is_set() and (event := stream.next_event()):
                            self.events.append(event)
                            self.last_id = event.id or self.last_id
                except httpx.HTTPError:
                    pass  # the worker's stream was cut: resume, as a browser would
                time.sleep(0.1)

    def messages(self) -> list[Event]:
        return [event for event in self.events if event.event == "message"]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_master_killed_mid_publishing_loses_no_acknowledged_message(tmp_path: Path):
    """Master + 2 replicas + 3 sentinels, two workers with WAIT=1, four subscribers.

    Two replicas: after the failover the new master still has one to WAIT for.
    """
    nodes = ("master", "replica0", "replica1")
    for name in nodes:
        (tmp_path / name).mkdir()
    channel = new_channel()
    with ExitStack() as stack:
        # Each node logs to its folder: what Redis did is there when this test fails.
        logs = {name: ("--logfile", str(tmp_path / name / "redis.log")) for name in nodes}
        master = stack.enter_context(redis_server(tmp_path / "master", *DATA, *logs["master"]))
        follow = ("--replicaof", "127.0.0.1", str(master.port))
        replicas = [
            stack.enter_context(redis_server(tmp_path / name, *DATA, *follow, *logs[name]))
            for name in nodes[1:]
        ]
        assert wait_for(lambda: all(synced(r) for r in replicas), 10), "replicas not in sync"
        sentinels = [
            stack.enter_context(sentinel(tmp_path / f"sentinel{n}", master.binary, master.port))
            for n in range(3)
        ]
        assert wait_for(lambda: all(watching(port, 2) for port in sentinels), 20)
        settings = {
            "redis_sentinels": ",".join(f"127.0.0.1:{port}" for port in sentinels),
            "redis_sentinel_master": MASTER,
            "redis_wait_replicas": 1,
            "retry_ms": 100,
            "retry_jitter": 0,
            "heartbeat_interval": 1,
        }
        workers = [
            stack.enter_context(uvicorn_process(log=tmp_path / f"worker{n}.log", **settings))
            for n in range(2)
        ]
        urls = [f"http://127.0.0.1:{worker.port}" for worker in workers]
        followers = [Follower(url, channel) for url in urls for _ in range(2)]
        for follower in followers:
            follower.start()
        client = stack.enter_context(httpx.Client(timeout=10))

        acked: dict[str, str] = {}  # id: data, of every 201
        refusals: list[str] = []
        after_kill = 0
        killed = False
        deadline = time.monotonic() + 60
        for n in range(3000):
            if time.monotonic() > deadline or after_kill >= 30:
                break
            answer = client.post(
                f"{urls[n % 2]}/channels/{channel}/messages", json={"data": f"m{n}"}
            )
            if answer.status_code == 201:
                acked[answer.json()["id"]] = f"m{n}"
                after_kill += killed
            else:
                # Never a 500 or a hang: a clear answer that says to try again.
                assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
                refusals.append(answer.json()["detail"])
            if len(acked) == 30 and not killed:
                assert master.process is not None
                master.process.send_signal(signal.SIGKILL)  # by the PID we started
                master.process.wait(5)
                killed = True
            time.sleep(0.01)
        assert killed and after_kill >= 30, f"publishing never resumed: {refusals[-3:]}"
        assert refusals, "the switch was seen by the publisher"

        # Every subscriber gets every acknowledged message, once, in order.
        newest = max(acked, key=parse_id)

        def caught_up() -> bool:
            return all(any(e.id == newest for e in f.events) for f in followers)

        caught = wait_for(caught_up, 30)
        for follower in followers:
            follower.done.set()
        assert caught, [len(follower.messages()) for follower in followers]
        for follower in followers:
            messages = follower.messages()
            ids = [parse_id(event.id or "") for event in messages]
            assert ids == sorted(set(ids)), "exactly once, in order"
            received = {event.id: event.data for event in messages}
            missing = [i for i in acked if i not in received]
            assert not missing, f"acknowledged but never delivered: {missing}"
            assert all(received[i] == data for i, data in acked.items())
            assert follower.streams >= 1

        # The history after the failover holds them all: on the new master, and for a
        # fresh subscriber replaying from the start.
        with Redis(port=sentinels[0], decode_responses=True) as admin:
            host, port = admin.sentinel_get_master_addr_by_name(MASTER)
        assert int(port) in {replica.port for replica in replicas}, "a replica was promoted"
        with Redis(host=host, port=int(port)) as new_master:
            history = stream_ids(new_master, channel)
        assert set(acked) <= set(history)
        with subscribe(client, urls[0], channel, last_id="0-0") as fresh:
            replayed = [event.id for event in fresh.events if event.event == "message"]
        assert set(acked) <= set(replayed)
        assert [parse_id(i or "") for i in replayed] == sorted(parse_id(i or "") for i in replayed)
