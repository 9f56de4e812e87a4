"""Three hosts behind nginx on one Redis: one host's network vanishes, every client moves on.

Each worker runs on a "host" of its own: a network namespace with its own address, joined
to this one by a veth pair that the test creates and removes. nginx (deploy/nginx.conf)
and Redis run here, on the host ends of those links. Mid-run one host's link is cut: its
worker keeps running, but nothing reaches it and nothing it sends arrives (no FIN, no
RST, not even "no route to host"): what a host that lost its network looks like to
nginx. Every client must then get every acknowledged message exactly once, in order,
from the hosts that are left. Needs root and `ip`; in CI nothing may skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from test_nginx import MAIN_CONF, NGINX, SITE_CONF, accepting, free_port
from uvicorn_process import APP, uvicorn_process

from {{ cookiecutter.project_slug }}.settings import Settings

from redis_server import RedisServer
from sse_client import Event, Subscription, new_channel

HEARTBEAT = 1.0
#: deploy/nginx.conf's rule: nginx gives up on a stream silent for twice the heartbeat.
READ_TIMEOUT = 2 * HEARTBEAT
#: The most nginx may keep a publisher waiting for a host that vanished: its connect
#: timeout (2 s) or its read timeout, then the next host, with room for a loaded machine.
PUBLISH_BOUND = 10.0
RETRY_MS = 200
HOSTS, CHANNELS, READERS_PER_CHANNEL = 3, 3, 15
#: Publishing: one message every PUBLISH_EVERY s, the cut after BEFORE_CUT s, the last
#: message AFTER_CUT s later; at most MAX_MESSAGES in all (well within the history).
#: AFTER_CUT is longer than the 10 s nginx leaves a failed host out: it tries the dead
#: host again with a new connection while the test publishes.
PUBLISH_EVERY, BEFORE_CUT, AFTER_CUT, MAX_MESSAGES = 0.02, 2.0, 15.0, 900
#: The longest a reader may go without a message (they come every 60 ms on a channel):
#: the read timeout, a retry, and a connect or read timeout (2 s) for a reconnect sent to
#: the dead host, 4.3 s in all; nearly twice that, for a loaded machine.
PAUSE_BOUND = 8.0
#: Once the last message is acknowledged, every reader must have it within this bound.
BOUND = 30.0
#: What the publisher sends last on each channel: a reader that gets it is done.
DONE = "done"
#: Addresses of the test's own links only (198.18.0.0/15 is set aside for such tests;
#: test_half_open.py uses 198.18.x.y, this test 198.19.x.y): one /30 per host.
SUBNET = f"198.19.{os.getpid() % 250}"


@dataclass(frozen=True)
class Host:
    namespace: str
    #: Its end of the link (inside the namespace), and its address there.
    link: str
    address: str
    #: This side's end of the link, and its address: where the host reaches nginx and Redis.
    local_link: str
    local_address: str


def ip_command() -> list[str]:
    """`ip`, or skip (fail in CI) saying why.

    Root itself, not sudo: the workers run as root inside the namespaces, and the test
    must be able to stop them by PID.
    """
    if shutil.which("ip") is None:
        reason = "needs the `ip` command (iproute2)"
    elif os.geteuid() != 0:
        reason = "needs root to run workers in network namespaces of their own"
    else:
        return ["ip"]
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def hosts(ip: list[str], count: int) -> Iterator[list[Host]]:
    """`count` namespaces, each joined to this one by a veth pair; all removed at the end."""
    suffix = str(os.getpid() % 100_000)
    made: list[Host] = []

    def run(*args: str) -> str:
        return subprocess.run(
            [*ip, *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    try:
        for n in range(count):
            host = Host(
                f"sse-host{n}-{suffix}",
                f"ssen{n}{suffix}",
                f"{SUBNET}.{4 * n + 2}",
                f"sseh{n}{suffix}",
                f"{SUBNET}.{4 * n + 1}",
            )
            made.append(host)
            run("netns", "add", host.namespace)
            run("link", "add", host.local_link, "type", "veth", "peer", "name", host.link)
            run("link", "set", host.link, "netns", host.namespace)
            run("addr", "add", f"{host.local_address}/30", "dev", host.local_link)
            run("link", "set", host.local_link, "up")
            run("-n", host.namespace, "link", "set", "lo", "up")
            run("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", host.link)
            run("-n", host.namespace, "link", "set", host.link, "up")
            # Its hardware address, fixed on this side: once the link is cut, packets to
            # the host vanish for good, as for a host behind a router. (Left to ARP, this
            # side would give up on the address after a while and answer "no route to
            # host" at once: an easier case.)
            [info] = json.loads(run("-n", host.namespace, "-j", "link", "show", host.link))
            run(
                *("neigh", "replace", host.address, "lladdr", info["address"]),
                *("dev", host.local_link, "nud", "permanent"),
            )
        yield made
    finally:
        for host in made:
            # Removing a namespace removes its end of the pair, and with it the other end.
            for what in (("netns", host.namespace), ("link", host.local_link)):
                subprocess.run([*ip, what[0], "delete", what[1]], capture_output=True, timeout=10)


def proxy_conf(upstreams: list[str], port: int) -> str:
    """deploy/nginx.conf in front of `upstreams`, on a loopback port, plain HTTP only.

    Its read timeout follows the config's own rule at the test's heartbeat interval.
    """
    text = SITE_CONF.read_text()
    heartbeat = Settings.model_fields["heartbeat_interval"].default
    assert f"proxy_read_timeout {2 * heartbeat:.0f}s;" in text, "not twice the heartbeat"
    servers = "\n    ".join(f"server {upstream};" for upstream in upstreams)
    changes = [
        (r"server 127\.0\.0\.1:8000;", servers),
        (r"listen 80;", f"listen 127.0.0.1:{port};"),
        (r"\n *listen 443 ssl http2;", ""),
        (r"\n *ssl_certificate(_key)? .*;", ""),
        (r"proxy_read_timeout \w+;", f"proxy_read_timeout {int(READ_TIMEOUT * 1000)}ms;"),
    ]
    for pattern, replacement in changes:
        text, found = re.subn(pattern, replacement, text)
        assert found == (2 if "ssl_certificate" in pattern else 1), pattern
    return text


@contextlib.contextmanager
def nginx(prefix: Path, upstreams: list[str]) -> Iterator[str]:
    """nginx running deploy/nginx.conf in front of `upstreams`; its URL. Stopped by PID."""
    # Every reader holds two connections (its own and nginx's to a worker).
    main_conf, found = re.subn(r"worker_connections \d+;", "worker_connections 512;", MAIN_CONF)
    assert found == 1
    for attempt in range(3):  # another process may take a free port before nginx binds it
        folder = prefix / f"nginx-{attempt}"
        (folder / "tmp").mkdir(parents=True)
        port = free_port()
        (folder / "site.conf").write_text(proxy_conf(upstreams, port))
        (folder / "nginx.conf").write_text(main_conf)
        log = folder / "error.log"
        command = [NGINX, "-p", str(folder), "-c", "nginx.conf", "-e", str(log)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            if accepting([port], process):
                yield f"http://127.0.0.1:{port}"
                return
        finally:
            process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}")


@dataclass
class Reader:
    """A spec EventSource on one channel.

    It reconnects after the stream's `retry` delay whenever the stream ends or the
    connection fails, sending the last id it got as Last-Event-ID, and gives up for good on
    a status other than 200. It has no read timeout, as a browser has none: only the proxy
    can tell it that a stream went silent.
    """

    url: str
    channel: str
    live: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    failure: str = ""
    #: Requests sent, and streams opened (a 200 with its headers).
    attempts: int = 0
    connects: int = 0
    #: When each event arrived (time.monotonic()).
    arrivals: list[float] = field(default_factory=list)
    #: The reconnection time, in seconds: the test's until a stream sets it (`retry:`).
    retry: float = RETRY_MS / 1000
    subscription: Subscription = field(default_factory=lambda: Subscription(iter(())))

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            while not stop.is_set():
                last_id = self.subscription.last_id
                headers = {"Last-Event-ID": last_id} if last_id is not None else {}
                self.attempts += 1
                try:
                    with client.stream("GET", self.url, headers=headers) as response:
                        if response.status_code != 200:
                            self.failure = f"HTTP {response.status_code}"
                            return
                        self.connects += 1
                        self.subscription.lines = self.watch(response.iter_lines())
                        while (event := self.subscription.next_event()) is not None:
                            self.arrivals.append(time.monotonic())
                            if event.data == DONE:
                                self.done.set()
                                return
                except httpx.TransportError:
                    pass  # the connection failed or was cut: reconnect, as after an end
                stop.wait(self.retry)

    def watch(self, lines: Iterator[str]) -> Iterator[str]:
        """The lines, noting `: live` (subscribed) and `retry:` (the reconnection time)."""
        for line in lines:
            if line == ": live":
                self.live.set()
            elif line.startswith("retry:") and line[6:].strip().isdigit():
                self.retry = int(line[6:]) / 1000  # not an event: the Subscription skips it
            yield line

    @property
    def longest_pause(self) -> float:
        """The longest time between two events: the failover, for a reader on the cut host."""
        pairs = zip(self.arrivals, self.arrivals[1:], strict=False)
        return max((later - earlier for earlier, later in pairs), default=0.0)

    @property
    def messages(self) -> list[Event]:
        return [event for event in self.subscription.events if event.data != DONE]


def join(threads: list[threading.Thread], timeout: float = 10) -> None:
    """Wait for `threads`, at most `timeout` seconds for all of them together."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def stream_id(event_id: str) -> tuple[int, int]:
    milliseconds, sequence = event_id.split("-")
    return int(milliseconds), int(sequence)


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_clients_fail_over_when_a_host_becomes_unreachable(tmp_path: Path):
    ip = ip_command()
    channels = [new_channel() for _ in range(CHANNELS)]
    with contextlib.ExitStack() as stack:
        machines = stack.enter_context(hosts(ip, HOSTS))
        # Reachable from every host (on this side's end of each link), and from here; on
        # these addresses only, so protected mode (loopback only, no password) can go.
        local = [host.local_address for host in machines]
        options = ("--bind", "127.0.0.1", *local, "--protected-mode", "no", "--appendonly", "no")
        redis = RedisServer(tmp_path, *options)
        redis.start()
        stack.callback(redis.stop)
        workers = [
            stack.enter_context(
                uvicorn_process(
                    log=tmp_path / f"worker-{n}.log",
                    command=(
                        *(*ip, "netns", "exec", host.namespace),
                        *(sys.executable, "-m", "uvicorn", APP, "--no-access-log"),
                        *("--host", host.address, "--port", "{port}", "--log-level", "info"),
                        *("--timeout-graceful-shutdown", "2"),
                    ),
                    host=host.address,
                    redis_url=f"redis://{host.local_address}:{redis.port}/0",
                    heartbeat_interval=HEARTBEAT,
                    retry_ms=RETRY_MS,
                )
            )
            for n, host in enumerate(machines)
        ]
        # The readers' threads end once told to stop and nginx has gone (which ends the
        # connections they read), whatever happens: in that order, before the workers.
        stop = threading.Event()
        threads: list[threading.Thread] = []
        stack.callback(join, threads)
        upstreams = [f"{host.address}:{w.port}" for host, w in zip(machines, workers, strict=True)]
        url = stack.enter_context(nginx(tmp_path, upstreams))
        stack.callback(stop.set)

        # The readers, spread over the hosts by nginx.
        readers = [
            Reader(f"{url}/channels/{channel}/events", channel)
            for channel in channels
            for _ in range(READERS_PER_CHANNEL)
        ]
        for reader in readers:
            threads.append(threading.Thread(target=reader.run, args=(stop,), daemon=True))
            threads[-1].start()
        deadline = time.monotonic() + 20
        for reader in readers:
            assert reader.live.wait(max(0.0, deadline - time.monotonic())), reader.failure
        cut_host, cut_worker = machines[1], workers[1]
        on_cut_host = cut_worker.streams()
        assert on_cut_host, "nginx sent no reader to the host the test cuts"

        # Publish continuously; cut the host's link on the way.
        acked: dict[str, dict[str, str]] = {channel: {} for channel in channels}
        unacked: dict[str, set[str]] = {channel: set() for channel in channels}
        answers: dict[str, int] = {}
        answers_after_cut: dict[str, int] = {}
        # Longer than nginx takes to answer for a dead host (a connect or read timeout).
        publisher = stack.enter_context(httpx.Client(timeout=PUBLISH_BOUND))
        started = time.monotonic()
        cut_at: float | None = None
        for n in range(MAX_MESSAGES):
            elapsed = time.monotonic() - started
            if elapsed > BEFORE_CUT + AFTER_CUT:
                break
            if cut_at is None and elapsed > BEFORE_CUT:
                # The host stays up, its worker too; its end of the link goes down. (Not
                # this side's end: that would take the route to the host away, and send its
                # address to the default route.)
                link_down = [*ip, "-n", cut_host.namespace, "link", "set", cut_host.link, "down"]
                subprocess.run(link_down, check=True, timeout=10)
                cut_at = time.monotonic()
            channel, data = channels[n % CHANNELS], str(n)
            try:
                response = publisher.post(f"{url}/channels/{channel}/messages", json={"data": data})
            except httpx.TimeoutException:
                pytest.fail(f"nginx kept a publish waiting for more than {PUBLISH_BOUND} s")
            except httpx.TransportError as exc:
                answer = type(exc).__name__
            else:
                answer = str(response.status_code)
                if response.status_code == 201:
                    acked[channel][data] = response.json()["id"]
            if answer != "201":
                # Not acknowledged: it may have been stored all the same (the request may
                # have reached the host before its link went dark), so readers may get it.
                unacked[channel].add(data)
            answers[answer] = answers.get(answer, 0) + 1
            if cut_at is not None:
                answers_after_cut[answer] = answers_after_cut.get(answer, 0) + 1
            time.sleep(PUBLISH_EVERY)
        assert cut_at is not None
        assert answers_after_cut.get("201"), "nothing acknowledged after the cut"
        for channel in channels:
            for _ in range(10):
                response = publisher.post(f"{url}/channels/{channel}/messages", json={"data": DONE})
                if response.status_code == 201:
                    break
            assert response.status_code == 201, response.text
        published = time.monotonic()

        waited = [r.done.wait(max(0.0, published + BOUND - time.monotonic())) for r in readers]
        print(
            f"publishes: {answers} ({answers_after_cut} after the cut); "
            f"{on_cut_host} readers on the cut host; "
            f"every reader done {time.monotonic() - published:.1f} s after the last message; "
            f"longest pauses: {sorted(round(r.longest_pause, 1) for r in readers)[-5:]} s; "
            f"requests per reader: {sorted({r.attempts for r in readers})}"
        )
        failed = [r.failure for r in readers if r.failure]
        assert not failed, f"readers gave up: {failed}"
        late = [
            (r.attempts, r.connects) for r, done in zip(readers, waited, strict=True) if not done
        ]
        assert not late, (
            f"{len(late)} of {len(readers)} readers did not get every message within "
            f"{BOUND:.0f} s of the last; their (requests, streams): {late}"
        )
        pauses = [round(r.longest_pause, 1) for r in readers if r.longest_pause > PAUSE_BOUND]
        assert not pauses, f"readers waited {pauses} s for the next message (the cut host's?)"
        for reader in readers:
            expected, maybe = acked[reader.channel], unacked[reader.channel]
            got = [(event.data, event.id) for event in reader.messages]
            ids = [stream_id(str(event_id)) for _, event_id in got]
            assert ids == sorted(set(ids)), "a message twice, or out of order"
            assert len({data for data, _ in got}) == len(got), "a message twice"
            acknowledged = {data: event_id for data, event_id in got if data in expected}
            assert acknowledged == expected, "an acknowledged message missed"
            assert {data for data, _ in got} - set(expected) <= maybe, "a message never sent"
        # Whatever got stored without a 201 was stored once: every reader has the same.
        for channel in channels:
            assert len({str(r.messages) for r in readers if r.channel == channel}) == 1
