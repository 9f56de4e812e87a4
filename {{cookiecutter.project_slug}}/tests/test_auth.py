"""Private channels: who may read `user.*` and `private.*`, through a real server."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest

from {{ cookiecutter.project_slug }}.auth import TOKEN_EXPIRED, Reader, read_channel
from {{ cookiecutter.project_slug }}.channels import CHANNEL_PATTERN
from {{ cookiecutter.project_slug }}.main import create_app
from {{ cookiecutter.project_slug }}.routing import StreamingFastAPI
from {{ cookiecutter.project_slug }}.settings import Settings, load_settings

import conftest
from conftest import RunningServer
from sse_client import new_channel, publish, subscribe

SECRET = "correct horse battery staple " * 3  # 84 bytes: long enough for HS512 too
PACKAGE = "{{ cookiecutter.project_slug }}"


def token(sub: object = "alice", ttl: float = 60, secret: str = SECRET, **claims: object) -> str:
    now = time.time()
    return jwt.encode({"sub": sub, "exp": int(now + ttl), **claims}, secret, algorithm="HS256")


def unsigned(claims: dict[str, object]) -> str:
    """A token with `alg: none`: claims anyone could write."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def stream_status(
    url: str, channel: str, headers: dict[str, str] | None = None, query: str = ""
) -> httpx.Response:
    """The answer to a subscription, read to the end unless it is a 200 (then closed)."""
    with httpx.Client(timeout=10) as client:
        path = f"{url}/channels/{channel}/events{query}"
        with client.stream("GET", path, headers=headers or {}) as response:
            if response.status_code != 200:
                response.read()
            return response


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def private(serve: Callable[..., RunningServer]) -> RunningServer:
    return serve(auth_secret=SECRET)


@pytest.fixture
def as_user() -> Iterator[Callable[[str], httpx.Client]]:
    """`as_user(token)`: a client that sends that bearer token with every request."""
    clients: list[httpx.Client] = []

    def make(value: str) -> httpx.Client:
        clients.append(httpx.Client(timeout=10, headers=bearer(value)))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_protected_names_are_valid_channel_names():
    for name in ("user.alice", "private.team-a", "user.a.b", "private.x_y"):
        assert re.fullmatch(CHANNEL_PATTERN, name), name


# -- public channels -------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, bearer("not a token"), bearer(token(secret="x" * 40))])
def test_public_channels_need_no_token_and_ignore_a_bad_one(private, client, headers):
    channel = new_channel()
    with (
        httpx.Client(timeout=10, headers=headers) as reader,
        subscribe(reader, private.url, channel) as subscription,
    ):
        publish(client, private.url, channel, "hello")
        assert [event.data for event in subscription.take(1)] == ["hello"]


# -- without SSE_AUTH_SECRET -----------------------------------------------------------


@pytest.mark.parametrize("channel", ["user.alice", "private.team"])
def test_without_a_secret_protected_channels_refuse_everyone(serve, channel):
    running = serve()
    for headers in ({}, bearer(token())):
        response = stream_status(running.url, channel, headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "SSE_AUTH_SECRET" in response.json()["detail"]


# -- 401: no valid token ---------------------------------------------------------------


def test_no_token_is_401_with_a_challenge(private):
    response = stream_status(private.url, "user.alice")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["detail"]


BAD_TOKENS = {
    "malformed": "not.a.jwt",
    "garbage": "x" * 300,
    "wrong signature": token(secret="another secret of at least 32 bytes"),
    "alg none": unsigned({"sub": "alice", "exp": int(time.time()) + 3600}),
    "HS512 with the right secret": jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS512"
    ),
    "expired": token(ttl=-5),
    "no exp": jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
    "no sub": jwt.encode({"exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"),
    "sub not a string": token(sub=7),
    "channels not a list": token(channels="private.team"),
    "exp a string": jwt.encode({"sub": "alice", "exp": "soon"}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
def test_an_invalid_token_is_401(private, name):
    response = stream_status(private.url, "user.alice", bearer(BAD_TOKENS[name]))
    assert response.status_code == 401, name
    assert response.headers["www-authenticate"] == "Bearer"
    detail = response.json()["detail"]
    assert detail and BAD_TOKENS[name] not in detail


def test_an_expired_token_says_so(private):
    response = stream_status(private.url, "user.alice", bearer(token(ttl=-5)))
    assert "expired" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Token abc"])
def test_an_authorization_header_that_is_not_bearer_is_401(private, header):
    # A good cookie does not rescue it: the header is what the client chose to send.
    headers = {"Authorization": header, "Cookie": f"sse_token={token()}"}
    response = stream_status(private.url, "user.alice", headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# -- who reads what --------------------------------------------------------------------


def test_a_user_reads_their_own_channel(private, client, as_user):
    channel = "user.alice-" + new_channel()
    sub = channel.removeprefix("user.")
    with subscribe(as_user(token(sub)), private.url, channel) as subscription:
        publish(client, private.url, channel, "for alice")
        assert [event.data for event in subscription.take(1)] == ["for alice"]


def test_another_users_token_is_403(private):
    response = stream_status(private.url, "user.alice", bearer(token("bob")))
    assert response.status_code == 403
    assert "bob" in response.json()["detail"]
    assert "www-authenticate" not in response.headers


def test_a_user_token_grants_no_private_channel(private):
    response = stream_status(private.url, "private.alice", bearer(token("alice")))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("patterns", "channel", "status"),
    [
        (["private.team-*"], "private.team-a", 200),
        (["private.team-*"], "private.team-", 200),
        (["private.team-*"], "private.team", 403),
        (["private.team-*"], "private.teamx", 403),
        (["private.ops"], "private.ops", 200),
        (["private.ops"], "private.ops2", 403),
        (["private.ops", "private.dev-*"], "private.dev-1", 200),
        ([], "private.ops", 403),
        # A pattern names private channels; it never opens another user's channel.
        (["user.*"], "user.bob", 403),
        (["*"], "user.bob", 403),
    ],
)
def test_the_channels_claim_grants_exact_names_and_prefixes(private, patterns, channel, status):
    response = stream_status(private.url, channel, bearer(token("alice", channels=patterns)))
    assert response.status_code == status, response.read()


def test_the_guard_is_an_ordinary_dependency_that_tests_may_override(
    serve, monkeypatch: pytest.MonkeyPatch
):
    """What a user's own tests do: replace the login by a fixed reader."""

    def build(settings: Settings) -> StreamingFastAPI:
        app = create_app(settings)
        app.dependency_overrides[read_channel] = lambda: Reader("alice", time.time() + 60)
        return app

    monkeypatch.setattr(conftest, "create_app", build)
    running = serve(auth_secret=SECRET)
    assert stream_status(running.url, "user.alice").status_code == 200


# -- where the token comes from --------------------------------------------------------


def test_the_token_may_come_in_the_cookie_or_the_query(private):
    good = token("alice")
    assert stream_status(private.url, "user.alice", {"Cookie": f"sse_token={good}"}).is_success
    assert stream_status(private.url, "user.alice", query=f"?token={good}").is_success


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        # The header wins over the cookie, and the cookie over the query.
        (bearer("bad"), "?token={good}", 401),
        (bearer("{good}") | {"Cookie": "sse_token=bad"}, "", 200),
        ({"Cookie": "sse_token=bad"}, "?token={good}", 401),
        ({"Cookie": "sse_token={good}"}, "?token=bad", 200),
        (bearer("{bob}") | {"Cookie": "sse_token={good}"}, "", 403),
    ],
)
def test_header_then_cookie_then_query(private, headers, query, status):
    values = {"good": token("alice"), "bob": token("bob")}
    headers = {name: value.format(**values) for name, value in headers.items()}
    response = stream_status(private.url, "user.alice", headers, query.format(**values))
    assert response.status_code == status


# -- a stream lasts as long as its token -----------------------------------------------


def test_a_stream_ends_when_its_token_expires_and_resumes_with_a_new_one(private, client):
    channel = "user.carol"
    # exp is in whole seconds: this one expires 1-2 s from now.
    short = token("carol", ttl=2)
    started = time.monotonic()
    with (
        httpx.Client(timeout=10, headers=bearer(short)) as reader,
        subscribe(reader, private.url, channel) as subscription,
    ):
        first = publish(client, private.url, channel, "before")
        rest = subscription.rest()  # until the server ends the stream
    lasted = time.monotonic() - started
    assert [(event.event, event.id) for event in rest] == [
        ("message", first),
        ("token-expired", None),
    ]
    assert 0.5 <= lasted <= 4, lasted
    assert "new" in json.loads(rest[-1].data)["detail"]

    # Published while the page renews its token: the resume delivers it, and only it.
    missed = publish(client, private.url, channel, "while renewing")
    with (
        httpx.Client(timeout=10, headers=bearer(token("carol"))) as renewed,
        subscribe(renewed, private.url, channel, last_id=first) as resumed,
    ):
        assert [(event.id, event.data) for event in resumed.events] == [(missed, "while renewing")]


def test_a_far_future_expiry_arms_a_timer_and_nothing_else(private, client):
    channel = "user.dave"
    far = jwt.encode({"sub": "dave", "exp": 10**30}, SECRET, algorithm="HS256")
    with (
        httpx.Client(timeout=10, headers=bearer(far)) as reader,
        subscribe(reader, private.url, channel) as subscription,
    ):
        publish(client, private.url, channel, "still here")
        assert [event.data for event in subscription.take(1)] == ["still here"]


def test_the_expiry_event_is_one_event_without_an_id():
    # Without an id, EventSource keeps the last message's id for the resume.
    assert TOKEN_EXPIRED.startswith(b"event: token-expired\n")
    assert b"\nid:" not in TOKEN_EXPIRED and TOKEN_EXPIRED.endswith(b"\n\n")


# -- nothing private leaks -------------------------------------------------------------


def test_a_private_message_never_reaches_a_public_stream(private, client, as_user):
    secret_text = "the launch code is 0000"
    public = new_channel()
    with (
        subscribe(client, private.url, public) as everyone,
        subscribe(as_user(token("erin")), private.url, "user.erin") as erin,
    ):
        publish(client, private.url, "user.erin", secret_text)
        publish(client, private.url, public, "public news")
        assert [event.data for event in erin.take(1)] == [secret_text]
        assert [event.data for event in everyone.take(1)] == ["public news"]
    # Nor its replay, to anyone without the token.
    response = stream_status(private.url, "user.erin", {"Last-Event-ID": "0-0"})
    assert response.status_code == 401
    assert secret_text not in response.text


def test_a_reset_carries_only_ids_and_the_reason(serve, client, as_user):
    running = serve(auth_secret=SECRET, history_size=2)
    secret_text = "private detail"
    ids = [publish(client, running.url, "user.frank", f"{secret_text} {n}") for n in range(20)]
    reader = as_user(token("frank"))
    with subscribe(reader, running.url, "user.frank", last_id=ids[0]) as subscription:
        [reset] = subscription.events
    assert reset.event == "reset"
    assert secret_text not in reset.data
    assert reset.id == ids[-1]


def test_tokens_never_reach_the_log(serve, caplog: pytest.LogCaptureFixture):
    running = serve(auth_secret=SECRET, log_level="debug")
    good, bad = token("gina"), "bad-token-value"
    caplog.set_level(logging.DEBUG)
    with httpx.Client(timeout=10) as client:
        for query in (f"?token={good}", f"?token={bad}", f"?token={good}&last_event_id=0-0"):
            with client.stream("GET", f"{running.url}/channels/user.gina/events{query}") as r:
                assert r.status_code in (200, 401)
    # The service's own lines (uvicorn's access log, off here, would show the query).
    text = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith(PACKAGE)
    )
    assert "user.gina" in text  # the streams were logged, by path
    assert good not in text and bad not in text and SECRET not in text


# -- settings and the token command ----------------------------------------------------


def test_a_short_secret_is_refused_at_start_up_without_showing_it(monkeypatch):
    monkeypatch.setenv("SSE_AUTH_SECRET", "too-short-secret")
    with pytest.raises(SystemExit) as exc:
        load_settings()
    message = str(exc.value)
    assert "SSE_AUTH_SECRET" in message and "32 bytes" in message
    assert "too-short-secret" not in message and "\n" not in message


def test_the_app_does_not_start_with_a_short_secret():
    result = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}.main"],
        env={"PATH": "/usr/bin:/bin", "SSE_AUTH_SECRET": "sixteen-byte-key"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Invalid settings: SSE_AUTH_SECRET='**********': ")
    assert "at least 32 bytes (got 16)" in line and "sixteen-byte-key" not in line


def test_the_demo_login_needs_a_secret(monkeypatch):
    monkeypatch.setenv("SSE_DEMO_LOGIN", "true")
    with pytest.raises(SystemExit, match=r"SSE_DEMO_LOGIN.*SSE_AUTH_SECRET"):
        load_settings()


def test_the_secret_counts_bytes_not_characters():
    Settings(auth_secret="é" * 16)  # 32 bytes in UTF-8
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(auth_secret="é" * 15 + "x")


def run_tokens(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if secret is not None:
        env["SSE_AUTH_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.tokens", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_the_token_command_mints_a_token_the_server_accepts(private):
    done = run_tokens("alice", "--channels", "private.team-*", "--ttl", "600")
    assert done.returncode == 0, done.stderr
    minted = done.stdout.strip()
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["private.team-*"]
    assert 590 <= claims["exp"] - time.time() <= 610
    for channel in ("user.alice", "private.team-red"):
        assert stream_status(private.url, channel, bearer(minted)).status_code == 200


@pytest.mark.parametrize(
    ("args", "secret", "says"),
    [
        (("alice",), None, "SSE_AUTH_SECRET is not set"),
        (("alice",), "short", "at least 32 bytes"),
        (("alice", "--ttl", "0"), SECRET, "--ttl"),
        (("alice", "--channels", "private.a b"), SECRET, "not a channel name"),
        (("alice", "--channels", "private.*.x"), SECRET, "not a channel name"),
        (("",), SECRET, "subject"),
    ],
)
def test_the_token_command_refuses_with_one_line(args, secret, says):
    done = run_tokens(*args, secret=secret)
    assert done.returncode == 2
    assert done.stdout == ""
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    if secret:
        assert secret not in done.stderr


# -- the demo login --------------------------------------------------------------------


def test_the_demo_login_is_off_by_default(private, client):
    assert client.post(private.url + "/demo/login", json={"name": "alice"}).status_code == 404
    assert "/demo/login" not in client.get(private.url + "/openapi.json").text
    assert 'id="private"' not in client.get(private.url + "/").text


def test_the_demo_login_sets_a_strict_http_only_cookie_for_the_users_channel(serve, client):
    running = serve(auth_secret=SECRET, demo_login=True, demo_token_ttl=120)
    assert 'id="private"' in client.get(running.url + "/").text
    response = client.post(running.url + "/demo/login", json={"name": "hana"})
    assert response.status_code == 200
    assert response.json()["channel"] == "user.hana"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sse_token=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/channels/", "max-age=120"} <= attributes
    assert "secure" not in attributes  # plain http here; https gets Secure
    minted = cookie.split(";")[0].removeprefix("sse_token=")
    assert stream_status(running.url, "user.hana", {"Cookie": f"sse_token={minted}"}).is_success
    assert (
        stream_status(running.url, "user.ivan", {"Cookie": f"sse_token={minted}"}).status_code
        == 403
    )


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "a b"}, {"name": "x" * 60}, {}])
def test_the_demo_login_refuses_a_name_that_makes_no_channel(serve, client, body):
    running = serve(auth_secret=SECRET, demo_login=True)
    assert client.post(running.url + "/demo/login", json=body).status_code == 422
