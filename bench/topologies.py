"""The Redis backend on one server, on Sentinel and on a Redis Cluster, in the same run.

Per topology: the backend's operations (heartbeat, connect+disconnect pair, bulk
query, count; bench/backends.py) at concurrency 1 and 64, and the Redis memory
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
            masters = [
                n.port
                for n in setup.nodes
                if redis.Redis(HOST, n.port).info("replication")["role"] == "master"
            ]
            yield setup.url(), masters
    finally:
        setup.stop()


def used_memory(ports: list[int]) -> int:
    return sum(redis.Redis(HOST, port).info("memory")["used_memory"] for port in ports)


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


async def run_one(url: str, ports: list[int], seconds: float, users: int) -> dict[str, Any]:
    factory = backends.installed_backends()["redis"]
    ops = await backends.bench_backend("redis", factory, seconds, url, None)
    return {"ops": ops, "memory_bytes_per_online_user": await memory_per_user(url, ports, users)}


async def run(
    single_port: int | None, workdir: Path, seconds: float, scale: float
) -> dict[str, Any]:
    users = max(500, int(MEMORY_USERS * scale))
    out: dict[str, Any] = {"memory_users": users}
    if single_port is not None:
        redis.Redis(HOST, single_port).flushall()
        url = f"redis://{HOST}:{single_port}/0"
        out["single"] = await run_one(url, [single_port], seconds, users)
    for kind in ("sentinel", "cluster"):
        with started(kind, workdir) as (url, ports):
            out[kind] = await run_one(url, ports, seconds, users)
    return out
