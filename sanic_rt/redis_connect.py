"""Redis URLs of the three topologies, and the one place that builds a client for them.

* ``redis://`` / ``rediss://`` / ``unix://``: one server.
* ``redis+sentinel://[user:pass@]host1:26379,host2:26379/<db>/<service>``: the
  master of ``service`` as the sentinels name it, re-resolved on every new
  connection (python-socketio's manager accepts the same form).
* ``redis+cluster://host1:7000,host2:7001`` (``rediss+cluster://`` for TLS):
  seed nodes of a Redis Cluster.

The presence backend and the cluster bus both build clients here, so a URL
means the same thing to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SINGLE_SCHEMES = {"redis", "rediss", "unix"}

Topology = Literal["single", "sentinel", "cluster"]


@dataclass(frozen=True)
class RedisUrl:
    """A parsed Redis URL: which topology, which hosts."""

    url: str = field(repr=False)  # may hold a password: never in a log line
    topology: Topology
    hosts: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    db: int = 0
    service: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisUrl:
    """Check ``url`` and say what it names; :class:`ValueError` with the reason if malformed."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in SINGLE_SCHEMES:
        return _parse_single(url)
    if scheme not in SENTINEL_SCHEMES and scheme not in CLUSTER_SCHEMES:
        known = sorted(SINGLE_SCHEMES | set(SENTINEL_SCHEMES) | set(CLUSTER_SCHEMES))
        raise ValueError(f"unknown scheme {scheme!r} (known: {', '.join(known)})")
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hosts = tuple(_host_port(item) for item in netloc.split(",")) if netloc else ()
    if not hosts:
        raise ValueError("no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    path = [p for p in parts.path.split("/") if p]
    if scheme in CLUSTER_SCHEMES:
        if path and path != ["0"]:
            raise ValueError("a Redis Cluster has database 0 only")
        return RedisUrl(url, "cluster", hosts, CLUSTER_SCHEMES[scheme], 0, "", username, password)
    if len(path) != 2 or not path[0].isdigit():
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/<db>/<service_name>")
    return RedisUrl(
        url, "sentinel", hosts, SENTINEL_SCHEMES[scheme], int(path[0]), path[1], username, password
    )


def _parse_single(url: str) -> RedisUrl:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("no socket path")
        return RedisUrl(url, "single")
    if "," in parts.netloc:
        raise ValueError("several hosts: use redis+sentinel:// or redis+cluster://")
    if not parts.hostname:
        raise ValueError("no host")
    _port(parts)
    return RedisUrl(url, "single", tls=parts.scheme == "rediss")


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {item!r}")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port out of range: {number}")
    return host.strip("[]"), number


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port  # raises ValueError when out of range
        return port
    except ValueError:
        raise ValueError("port out of range") from None


def connect_redis(
    url: str,
    *,
    max_connections: int,
    timeout: float | None,
    connect_timeout: float,
) -> aioredis.Redis | RedisCluster:
    """An asyncio client for ``url`` (any topology); no I/O until the first command.

    ``timeout`` is the socket read timeout (None: wait, as a pub/sub subscriber
    must). Calls fail fast (no retries): callers decide when to try again. A
    Sentinel client re-asks the sentinels for the master on every new
    connection and drops a connection that meets READONLY (a demoted master).
    """
    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.topology == "single":
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **options
        )
        return aioredis.Redis(connection_pool=pool)
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.hosts),
            # the sentinels themselves: same timeouts, no credentials of the data nodes
            sentinel_kwargs=dict(options, ssl=target.tls),
            **options,
            **credentials,
            ssl=target.tls,
            db=target.db,
        )
        master: aioredis.Redis = sentinel.master_for(
            target.service, max_connections=max_connections
        )
        return master
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        max_connections=max_connections,
        ssl=target.tls,
        **options,
        **credentials,
    )


async def close_redis(client: aioredis.Redis | RedisCluster) -> None:
    """Close ``client`` and, for a Sentinel one, its connections to the sentinels."""
    await client.aclose()
    sentinels = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if sentinels is not None:
        await sentinels.aclose()


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (batches take another shape there)."""
    return isinstance(client, RedisCluster)
