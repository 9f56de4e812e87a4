"""Redis Sentinel: the command pool and the subscription connection follow the master.

Every new connection asks the sentinels where the master is (redis-py's
SentinelManagedConnection), so nothing here watches for a failover: a connection to the
old master fails (refused, reset, or READONLY once it is a replica), the commands on it
answer 503, and the next connection goes to the new master. The subscription connection
(redis_live.py) is made from the same pool's connection class, so its reconnect lands on
the new master too, and fills each channel's gap from there. Sentinel itself closes the
clients of an instance it turns into a replica (CLIENT KILL with its REPLICAOF), so a
live connection does not stay on a demoted master.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Sentinel, SSLConnection
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff

#: A sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT = 1.0


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool with the plain URL's limit: at most `max_connections`, callers
    beyond it wait for one (redis-py's own Sentinel pool raises instead)."""


def sentinel_pool(
    url: str, sentinels: Sequence[tuple[str, int]], master: str, **options: Any
) -> tuple[Sentinel, SentinelBlockingPool]:
    """The sentinels' client and a pool of connections to `master`.

    `url` gives what the connections need beyond an address (database, user name,
    password, TLS); `options` are the pool's and connections' own.
    """
    from_url = parse_url(url)
    ssl = from_url.pop("connection_class", None) is SSLConnection
    for address in ("host", "port", "path"):
        from_url.pop(address, None)
    asking = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),  # a sentinel that fails: the next one is asked
    }
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=asking)
    pool = SentinelBlockingPool(master, sentinel, ssl=ssl, **from_url, **options)
    return sentinel, pool


def describe(sentinels: Sequence[tuple[str, int]], master: str) -> str:
    """Where Redis is, for messages (never the password)."""
    return f"master {master!r} of sentinels " + ",".join(f"{h}:{p}" for h, p in sentinels)
