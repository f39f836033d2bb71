"""The Redis backend on one server, on Sentinel and on a Redis Cluster, in the same run.

Per topology: heartbeats and bulk queries of 100 ids through the Presence API
(as bench/backends.py runs them) at concurrency 1 and 64, and the Redis memory
per online user (``used_memory`` summed over the masters, before and after
``touch`` of ``MEMORY_USERS`` users with one connection each).

The topologies are the test suite's (tests/support/topologies.py): 1 master +
1 replica + 3 sentinels; 3 masters + 3 replicas.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from sanic_rt.backend import BackendUnavailable
from sanic_rt.presence import Presence
from sanic_rt.presence_model import Connection, Timings

from . import backends
from .procs import HOST

MEMORY_USERS = 10_000


@contextlib.contextmanager
def started(kind: str, workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """(url, master ports) of a running topology of ``kind``; stopped afterwards."""
    from tests.support.topologies import ClusterSetup, SentinelSetup

    setup: Any = (SentinelSetup if kind == "sentinel" else ClusterSetup)(
        Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir))
    )
    try:
        setup.start()
        if kind == "sentinel":
            yield setup.url(), [setup.master_port()]
        else:
            yield setup.url(), [n.port for n in setup.nodes if role(n.port) == "master"]
    finally:
        setup.stop()


def _info(port: int, section: str) -> dict[str, Any]:
    with redis.Redis(HOST, port) as client:
        return client.info(section)


def role(port: int) -> str:
    return _info(port, "replication")["role"]


def used_memory(ports: list[int]) -> int:
    return sum(_info(port, "memory")["used_memory"] for port in ports)


async def memory_per_user(url: str, ports: list[int], users: int) -> float:
    """Bytes of Redis memory per online user with one connection (touch in batches of 500)."""
    factory = backends.installed_backends()["redis"]
    config = backends.presence_config("redis", url, None)
    backend = factory(config, Timings())
    ids = [f"mem-{i:07d}" for i in range(users)]
    try:
        before = used_memory(ports)
        for i in range(0, users, 500):
            conns = [
                Connection(u, secrets.token_urlsafe(15), "/chats", "web") for u in ids[i : i + 500]
            ]
            await backend.touch(conns, time.time(), False)
        return (used_memory(ports) - before) / users
    finally:
        await backend.close()


async def rates(url: str, seconds: float) -> dict[str, Any]:
    """Heartbeat and bulk-query rates through the Presence API; failed calls counted, not fatal."""
    config = backends.presence_config("redis", url, None)
    p = config.presence
    backend = backends.installed_backends()["redis"](config, Timings(p.ttl, p.offline_grace))
    presence = Presence(backend, p, config.auth.max_connections_per_user)
    await presence.start()
    users = [f"user{i}" for i in range(backends.POPULATION)]
    failed = 0

    async def counted(call: Any) -> None:
        nonlocal failed
        try:
            await call
        except BackendUnavailable:  # a deadline missed on an overloaded machine
            failed += 1

    async def heartbeat(i: int) -> None:
        uid = users[i % len(users)]
        await counted(presence.mark_user_online(uid, f"sid-{uid}"))

    async def bulk_query(i: int) -> None:
        await counted(presence.get_many(users[: backends.BULK_IDS]))

    out: dict[str, Any] = {}
    try:
        for uid in users:
            await presence.connect(uid, f"sid-{uid}", "/chats")
        for name, op in {"heartbeat": heartbeat, "bulk_100": bulk_query}.items():
            for c in backends.CONCURRENCIES:
                failed = 0
                out[f"{name}@{c}"] = await backends.rate(op, c, seconds) | {"failed": failed}
    finally:
        await presence.close()
    return out


async def run_one(url: str, ports: list[int], seconds: float, users: int) -> dict[str, Any]:
    return {
        "ops": await rates(url, seconds),
        "memory_bytes_per_online_user": await memory_per_user(url, ports, users),
    }


async def run(
    single_port: int | None, workdir: Path, seconds: float, scale: float
) -> dict[str, Any]:
    users = max(500, int(MEMORY_USERS * scale))
    out: dict[str, Any] = {"memory_users": users}
    if single_port is not None:
        with redis.Redis(HOST, single_port) as client:
            client.flushall()
        url = f"redis://{HOST}:{single_port}/0"
        out["single"] = await run_one(url, [single_port], seconds, users)
    for kind in ("sentinel", "cluster"):
        with started(kind, workdir) as (url, ports):
            out[kind] = await run_one(url, ports, seconds, users)
    return out
