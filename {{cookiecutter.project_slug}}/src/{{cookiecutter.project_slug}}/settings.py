"""Settings, read from environment variables prefixed with SSE_ (e.g. SSE_MESSAGE_COUNT)."""

from __future__ import annotations

from typing import Literal
{%- if cookiecutter.broker == "redis" %}
from urllib.parse import urlsplit
{%- endif %}

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

#: HS256 needs a key at least as long as its hash: 32 bytes.
MIN_SECRET_BYTES = 32
#: Settings whose values never appear in an error message.
SECRETS = frozenset({"publish_token", "auth_secret"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SSE_", frozen=True)

    message_count: int = Field(default={{ cookiecutter.__message_count }}, ge=1, le=1_000_000)
    """How many messages the /events demo stream sends."""

    message_interval: float = Field(default={{ cookiecutter.__message_interval }}, ge=0, le=3600)
    """Seconds between two messages of the demo stream."""

    heartbeat_interval: float = Field(default=15.0, gt=0, le=3600)
    """Longest silence on a stream before a comment line is sent to keep proxies from
    closing it; below the common 30-60 s idle timeouts of proxies and load balancers."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of this service's own log lines (logfmt on stderr, see logs.py); `debug`
    adds a line for every stream that opens or ends."""

    retry_ms: int = Field(default=3000, ge=0, le=3_600_000)
    """Reconnection delay the server asks browsers to wait after a dropped connection."""

    retry_jitter: float = Field(default=0.5, ge=0, le=10)
    """Each stream's `retry` is drawn from retry_ms to retry_ms x (1 + jitter), so the
    clients of a restarted worker come back spread out instead of all at once."""

    send_timeout: float = Field(default=30.0, ge=0.1, le=3600)
    """Longest a write to one client may wait for it to read, in seconds; then that
    client is dropped, so one stalled reader holds neither memory nor a socket for long.
    The heartbeat timer checks at least twice per timeout: keep it well above 0.1 s."""

    max_clients: int = Field(default=10_000, ge=1, le=1_000_000)
    """Open streams per worker; beyond it new streams get 503 with Retry-After, so a
    flood of clients cannot exhaust the worker's file descriptors or memory."""

    history_size: int = Field(default=1000, ge=1, le=1_000_000)
    """Messages kept per channel for clients that reconnect with Last-Event-ID."""

    subscriber_queue: int = Field(default=64, ge=1, le=100_000)
    """Writes a stream may fall behind by before it is dropped as too slow (it then
    reconnects and catches up from history); bounds the memory one client can hold."""

    replay_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=1024**3)
    """Most a catch-up after Last-Event-ID may send, in bytes of SSE frames; past it the
    client gets a `reset` (with the newest id) and continues live from there, so a few
    clients resuming from far back cannot make a worker hold or send gigabytes."""

    max_message_bytes: int = Field(default=65536, ge=1, le=16 * 1024 * 1024)
    """Largest `data` a publisher may send, in UTF-8 bytes; larger gets 413."""

    publish_token: SecretStr | None = Field(default=None, min_length=1)
    """When set, publishing needs `Authorization: Bearer <token>`. Unset, anyone who can
    reach the service can publish: a deployment must set it."""

    auth_secret: SecretStr | None = None
    """Turns on private channels: the key (at least 32 bytes) that signs subscribers'
    tokens (JWT, HS256). `user.<name>` channels are then readable only by <name>, and
    `private.*` ones only as a token's `channels` claim grants; unset, both refuse every
    subscriber. Every other channel stays public. See auth.py and tokens.py."""

    demo_login: bool = False
    """Serves POST /demo/login, which hands any visitor a token for the `user.<name>`
    channel of the name they type, so the page can show a private channel. A demo, never
    a login: replace it with your own. Needs SSE_AUTH_SECRET."""

    demo_token_ttl: int = Field(default=300, ge=1, le=86_400)
    """Seconds the demo login's tokens last; an open stream ends when its token does."""
{%- if cookiecutter.broker == "redis" %}

    redis_url: str = "redis://127.0.0.1:6379/0"
    """The Redis server holding the channels (redis://, rediss:// or unix://). With
    sentinels, only its database, user name, password and TLS (rediss://) are used."""

    redis_sentinels: str = ""
    """Redis Sentinel: the sentinels' addresses, `host:port,host:port`; the master they
    name (`redis_sentinel_master`) is used instead of the URL's host, and followed when
    they fail it over."""

    redis_sentinel_master: str = Field(default="", validate_default=True)
    """The master's name in the sentinels' configuration (`sentinel monitor <name> ...`)."""

    redis_wait_replicas: int = Field(default=0, ge=0, le=100)
    """Replicas that must have a message (Redis WAIT) before its publish is acknowledged;
    0 acknowledges once the master has it."""

    redis_wait_timeout: float = Field(default=1.0, ge=0.001, le=4.0)
    """Seconds WAIT may take; fewer replicas by then: 503. Below the 5 s read timeout of
    the command connections, so a slow WAIT is never mistaken for a lost connection."""

    redis_cluster: bool = False
    """SSE_REDIS_URL names a node of a Redis Cluster (7.0 or newer; any node: the others
    are found from it). Each channel's keys are in one slot; live messages travel by
    sharded pub/sub, and each worker holds one subscription connection per master."""
{%- else %}

    history_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024, le=64 * 1024**3)
    """Most the history of all channels may take in this worker, in bytes of SSE frames;
    past it the oldest messages of the channels published to least recently go first
    (a client resuming from one of them gets a `reset`)."""

    max_channels: int = Field(default=10_000, ge=1, le=1_000_000)
    """Channels this worker keeps in memory; publishing to one more forgets the channel
    published to least recently that has no subscriber (its history goes with it)."""
{%- endif %}

{%- if cookiecutter.broker == "redis" %}

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, text: str) -> str:
        sentinel_addresses(text)  # raises ValueError with the reason
        return text

    @field_validator("redis_sentinel_master")
    @classmethod
    def _master_with_sentinels(cls, master: str, info: ValidationInfo) -> str:
        # Sentinels that failed their own check are missing here, and reported already.
        sentinels = info.data.get("redis_sentinels")
        if sentinels and not master:
            raise ValueError("SSE_REDIS_SENTINELS is set: name the master too")
        if master and sentinels == "":
            raise ValueError("a master name needs SSE_REDIS_SENTINELS (host:port,...)")
        if master and info.data.get("redis_url", "").startswith("unix:"):
            raise ValueError("sentinels name a host and port: SSE_REDIS_URL cannot be unix://")
        return master
{%- endif %}

    @field_validator("auth_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        problem = secret_problem(secret.get_secret_value()) if secret is not None else None
        if problem is not None:
            raise ValueError(problem)
        return secret

{%- if cookiecutter.broker == "redis" %}

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_url(cls, cluster: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url", "")
        if cluster and not url.startswith(("redis://", "rediss://")):
            raise ValueError("a Redis Cluster is reached over TCP: use a redis:// or rediss:// URL")
        if cluster and urlsplit(url).path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0: leave it out of SSE_REDIS_URL")
        if cluster and info.data.get("redis_sentinels"):
            raise ValueError("a Redis Cluster fails over by itself: leave out SSE_REDIS_SENTINELS")
        if cluster and info.data.get("redis_wait_replicas"):
            raise ValueError(
                "SSE_REDIS_WAIT_REPLICAS is for a single master with replicas, not a Redis Cluster"
            )
        return cluster
{%- endif %}

    @field_validator("demo_login")
    @classmethod
    def _needs_a_secret(cls, enabled: bool, info: ValidationInfo) -> bool:
        # An auth_secret that failed its own check is missing here, and reported already.
        if enabled and "auth_secret" in info.data and info.data["auth_secret"] is None:
            raise ValueError("the demo login signs tokens: set SSE_AUTH_SECRET too")
        return enabled


{%- if cookiecutter.broker == "redis" %}


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` as pairs; ValueError naming the first bad one."""
    addresses = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port (e.g. 10.0.0.5:26379)")
        addresses.append((host, int(port)))
    if text and not addresses:
        raise ValueError("no sentinel address: host:port,host:port")
    return addresses
{%- endif %}


def load_settings() -> Settings:
    """The settings, or exit with one readable line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SSE_{'_'.join(map(str, error['loc'])).upper()}={shown(error)}: {error['msg']}"
            for error in exc.errors()
        )
        raise SystemExit(f"Invalid settings: {problems}") from None


def shown(error: ErrorDetails) -> str:
    """The bad value as an error message may show it: a secret shows as stars."""
    if error["loc"] and error["loc"][0] in SECRETS:
        return "'**********'"
    return repr(error.get("input"))


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign tokens, or None (shared by the settings and tokens.py)."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        return f"must be at least {MIN_SECRET_BYTES} bytes (got {size}): `openssl rand -hex 32`"
    return None
