"""The streams through a real nginx running deploy/nginx.conf, in front of a real server.


nginx is looked up in $SSE_TEST_NGINX, then PATH, then /usr/sbin/nginx. Without it these
tests skip, unless SSE_REQUIRE_NGINX=1 (as in CI), which turns a missing nginx into a
failure. Each test runs its own nginx: no root, no daemon, every file in the test's tmp dir,
and the config's HTTPS listener with a self-signed certificate the test session makes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httpx_sse import connect_sse

from conftest import RunningServer

#: Real servers, browsers or networks: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

SITE_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
# Everything the site file leaves to the main config, kept inside the test's directory.
# One process in the foreground (no master, no daemon), so stopping its PID stops nginx.
# gzip is on for everything here, as on many real sites: the stream must still go
# out uncompressed.
MAIN_CONF = """
daemon off;
master_process off;
pid nginx.pid;
error_log error.log warn;
events {
    worker_connections 64;
}
http {
    access_log access.log;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    gzip on;
    gzip_min_length 1;
    gzip_types text/plain application/json text/event-stream;
    include site.conf;
}
"""


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("SSE_REQUIRE_NGINX") == "1":
        pytest.fail(f"SSE_REQUIRE_NGINX=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # one line for the module, not one per test


def find_nginx() -> str:
    configured = os.environ.get("SSE_TEST_NGINX")
    found = shutil.which(configured or "nginx") or (
        None if configured else shutil.which("/usr/sbin/nginx")
    )
    if found is None:
        unavailable(
            f"SSE_TEST_NGINX={configured!r} is not an executable"
            if configured
            else "no nginx for the proxy tests: install it (apt install nginx, brew install nginx)"
        )
    return found


NGINX = find_nginx()


def site_conf(
    app_port: int, ports: dict[str, int], certificate: Certificate, read_timeout: str | None
) -> str:
    """deploy/nginx.conf, pointed at the test server, listening on loopback ports."""
    text = SITE_CONF.read_text()
    changes = [
        (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{app_port};"),
        (r"listen 80;", f"listen 127.0.0.1:{ports['http']};"),
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{ports['https']} ssl http2;"),
        (r"ssl_certificate .*;", f"ssl_certificate {certificate.cert};"),
        (r"ssl_certificate_key .*;", f"ssl_certificate_key {certificate.key};"),
    ]
    if read_timeout is not None:
        changes.append((r"proxy_read_timeout \w+;", f"proxy_read_timeout {read_timeout};"))
    for pattern, replacement in changes:
        text, found = re.subn(pattern, replacement, text)
        assert found == 1, f"deploy/nginx.conf no longer has exactly one {pattern!r}"
    return text


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepting(ports: Iterable[int], process: subprocess.Popen[bytes]) -> bool:
    """Whether nginx came up on every port (False once it exited, e.g. a port was taken)."""
    deadline = time.monotonic() + 10
    waiting = set(ports)
    while waiting and time.monotonic() < deadline and process.poll() is None:
        port = next(iter(waiting))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            waiting.discard(port)
    return not waiting and process.poll() is None


@pytest.fixture
def proxy(tmp_path: Path, certificate: Certificate) -> Iterator[Callable[..., str]]:
    """`proxy(server, read_timeout="1500ms")` starts nginx in front of `server`.

    Returns its http:// URL, or with `scheme="https"` the URL of its HTTPS (HTTP/2) side.
    """
    processes: list[subprocess.Popen[bytes]] = []

    def start(server: RunningServer, read_timeout: str | None = None, scheme: str = "http") -> str:
        app_port = int(server.url.rsplit(":", 1)[1])
        for _ in range(3):  # another process may take a free port before nginx binds it
            prefix = tmp_path / f"nginx-{len(processes)}"
            (prefix / "tmp").mkdir(parents=True)
            ports = {"http": free_port(), "https": free_port()}
            conf = site_conf(app_port, ports, certificate, read_timeout)
            (prefix / "site.conf").write_text(conf)
            (prefix / "nginx.conf").write_text(MAIN_CONF)
            log = prefix / "error.log"
            command = [NGINX, "-p", str(prefix), "-c", "nginx.conf", "-e", str(log)]
            processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
            if accepting(ports.values(), processes[-1]):
                return f"{scheme}://127.0.0.1:{ports[scheme]}"
        raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}")

    yield start
    for process in processes:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_first_event_arrives_at_once_through_nginx(serve, proxy, client: httpx.Client):
    # The stream takes 4 s in all; a buffering proxy would hold the first event back.
    url = proxy(serve(message_count=3, message_interval=2.0))
    started = time.monotonic()
    headers = {"Accept-Encoding": "gzip"}
    with connect_sse(client, "GET", url + "/events", headers=headers) as source:
        assert source.response.status_code == 200
        assert "content-encoding" not in source.response.headers, "the stream was compressed"
        first = next(event for event in source.iter_sse() if event.data)
        elapsed = time.monotonic() - started
    assert first.data == "Message 1"
    assert elapsed < 1.0, f"the first event took {elapsed:.2f} s through nginx"


def test_idle_stream_stays_open_through_nginx_on_heartbeats(serve, proxy, client: httpx.Client):
    # nginx gives up on a silent upstream after 1.5 s; the next message is 3.5 s away.
    running = serve(message_count=2, message_interval=3.5, heartbeat_interval=0.2)
    url = proxy(running, read_timeout="1500ms")
    with client.stream("GET", url + "/events") as response:
        lines = list(response.iter_lines())
    assert "data: Message 2" in lines, lines
    assert "event: end" in lines, lines
    assert len([line for line in lines if line.startswith(":")]) >= 4, lines


def test_idle_stream_without_heartbeats_is_cut_by_nginx(serve, proxy, client: httpx.Client):
    """The control for the test above: the short timeout is real, heartbeats beat it."""
    running = serve(message_count=2, message_interval=3.5, heartbeat_interval=60)
    url = proxy(running, read_timeout="1500ms")
    lines: list[str] = []
    started = time.monotonic()
    # nginx drops the client's connection mid-response: an incomplete chunked body.
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", url + "/events") as r:
        lines.extend(r.iter_lines())
    assert "data: Message 1" in lines
    assert "data: Message 2" not in lines
    assert time.monotonic() - started < 3.5


def test_resumes_after_last_event_id_through_nginx(serve, proxy, client: httpx.Client):
    url = proxy(serve(message_count=4, message_interval=0.2))
    with connect_sse(client, "GET", url + "/events", headers={"Last-Event-ID": "2"}) as source:
        events = [event for event in source.iter_sse() if event.data or event.event == "end"]
    assert [(event.id, event.data) for event in events[:-1]] == [
        ("3", "Message 3"),
        ("4", "Message 4"),
    ]
    assert events[-1].event == "end"


def test_finished_stream_gets_204_through_nginx(serve, proxy, client: httpx.Client):
    url = proxy(serve(message_count=4, message_interval=0.2))
    response = client.get(url + "/events", headers={"Last-Event-ID": "4"})
    assert response.status_code == 204


def test_page_is_served_through_nginx(serve, proxy, client: httpx.Client):
    url = proxy(serve(message_count=4))
    response = client.get(url + "/")
    assert response.status_code == 200
    assert "/static/app.js" in response.text


def test_published_message_arrives_at_once_through_nginx(serve, proxy, client: httpx.Client):
    url = proxy(serve())
    channel = f"nginx-{uuid.uuid4().hex[:12]}"  # fresh: a Redis broker outlives one test
    with client.stream("GET", f"{url}/channels/{channel}/events") as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        # ": live" marks the moment the subscription is live: a message published after
        # it must arrive.
        assert next(line for line in lines if line.startswith(": live"))
        started = time.monotonic()
        published = client.post(f"{url}/channels/{channel}/messages", json={"data": "hello"})
        assert published.status_code == 201, published.text
        data = next(line for line in lines if line.startswith("data:"))
        elapsed = time.monotonic() - started
    assert data == "data: hello"
    assert elapsed < 1.0, f"the message took {elapsed:.2f} s through nginx"


def test_stream_arrives_over_https_through_nginx(serve, proxy, certificate: Certificate):
    """The config's TLS side (HTTP/2 for browsers; httpx speaks HTTP/1.1 over it)."""
    url = proxy(serve(message_count=2, message_interval=0.1), scheme="https")
    with (
        httpx.Client(timeout=10, verify=ssl.create_default_context(cafile=certificate.cert)) as tls,
        connect_sse(tls, "GET", url + "/events") as source,
    ):
        assert source.response.status_code == 200
        data = [event.data for event in source.iter_sse() if event.data]
    assert data == ["Message 1", "Message 2"]
