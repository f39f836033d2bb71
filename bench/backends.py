"""Presence backends through the core Presence API, in-process, next to their client's floor.

For each installed backend: heartbeat (mark_user_online), connect+disconnect pair,
bulk query of 100 ids, online count, at concurrency 1 and 64, each op bounded in count
and time. The floor is the same client library against the same server (redis PING,
memcached get of one key), run the way the backend runs it. An asyncio sleep-drift
sampler runs throughout: a backend that blocks the loop shows up as lag.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence

from .procs import HOST

POPULATION = 1000
BULK_IDS = 100
CONCURRENCIES = (1, 64)
MAX_OPS = 200_000
LAG_INTERVAL = 0.005
YIELD_EVERY = 16


class LagSampler:
    """Sleep drift of the event loop: how late a short sleep wakes up."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.perf_counter() - t0 - self.interval))

    def __enter__(self) -> LagSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float | None]:
        s = sorted(self.samples)
        if not s:
            return {"lag_p50_ms": None, "lag_p99_ms": None, "lag_max_ms": None}
        return {
            "lag_p50_ms": 1000 * s[len(s) // 2],
            "lag_p99_ms": 1000 * s[min(len(s) - 1, int(0.99 * len(s)))],
            "lag_max_ms": 1000 * s[-1],
        }


async def rate(
    op: Callable[[int], Awaitable[Any]], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Run ``op(i)`` from ``concurrency`` tasks until ``seconds`` or MAX_OPS; ops/s and lag."""
    counter = iter(range(MAX_OPS))
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        for i in counter:
            if time.perf_counter() > deadline:
                return
            await op(i)
            done += 1
            if i % YIELD_EVERY == 0:
                # The memory backend never suspends: without this one worker would hold
                # the loop for the whole run. In a server each op is its own event anyway.
                await asyncio.sleep(0)

    cpu0 = time.process_time()
    with LagSampler() as lag:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "ops": done,
        "seconds": elapsed,
        "ops_per_s": done / elapsed,
        "ops_per_cpu_s": done / cpu if cpu > 0 else None,
        **lag.summary(),
    }


def presence_config(name: str, redis_url: str | None, memcached_addr: str | None) -> Any:
    sections: dict[str, Any] = {
        # A long grace: the pairs' grace timers must not fire into later measurements.
        "presence": {"backend": name, "offline_grace": 3600.0, "ttl": 60.0},
    }
    if redis_url:
        sections["presence"]["redis"] = {"url": redis_url, "key_prefix": "bench"}
    if memcached_addr:
        sections["presence"]["memcached"] = {"servers": [memcached_addr], "key_prefix": "bench"}
    config = load_config(None, env={})
    # The config reader takes dotted overrides; flatten our sections into them.
    overrides: dict[str, Any] = {}

    def flatten(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                flatten(f"{prefix}{key}.", value)
            else:
                overrides[f"{prefix}{key}"] = value

    flatten("", sections)
    return load_config(None, env={}, overrides=overrides) if overrides else config


def installed_backends() -> dict[str, Any]:
    host = PluginHost(load_config(None, env={}))
    host.load()
    return host.backends()


async def bench_backend(
    name: str, factory: Any, seconds: float, redis_url: str | None, memcached_addr: str | None
) -> dict[str, Any]:
    config = presence_config(name, redis_url, memcached_addr)
    p = config.presence
    backend = factory(config, p)
    presence = Presence(backend, p, config.auth.max_connections_per_user)
    await presence.start()
    results: dict[str, Any] = {}
    try:
        users = [f"user{i}" for i in range(POPULATION)]
        for uid in users:
            await presence.connect(uid, f"sid-{uid}", "/chats")
        bulk = users[:BULK_IDS]
        run_id = os.getpid()

        async def heartbeat(i: int) -> None:
            uid = users[i % POPULATION]
            await presence.mark_user_online(uid, f"sid-{uid}")

        async def pair(i: int) -> None:
            uid = f"pair{run_id}-{i}"
            await presence.connect(uid, f"sid-{uid}", "/chats")
            await presence.disconnect(uid, f"sid-{uid}")

        async def bulk_query(i: int) -> None:
            await presence.get_many(bulk)

        async def count(i: int) -> None:
            await presence.online_count()

        ops = {"heartbeat": heartbeat, "pair": pair, "bulk_100": bulk_query, "count": count}
        for op_name, op in ops.items():
            for c in CONCURRENCIES:
                results[f"{op_name}@{c}"] = await rate(op, c, seconds)
    finally:
        await presence.close()
    return results


async def redis_floor(url: str, pool_size: int, seconds: float) -> dict[str, Any]:
    """redis-py asyncio PING through a pool configured as the backend configures its own.

    Callers queue on a semaphore of the pool's size, as the backend's do: with
    more waiters than connections redis-py's BlockingConnectionPool times out
    waiters ("No connection available") even while every PING is fast.
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=1.0)
    client = aioredis.Redis(connection_pool=pool)
    slots = asyncio.Semaphore(pool_size)
    try:

        async def ping(i: int) -> None:
            async with slots:
                await client.ping()

        return {f"floor@{c}": await rate(ping, c, seconds) for c in CONCURRENCIES}
    finally:
        await client.aclose()


async def memcached_floor(
    addr: str, pool_size: int, threads: int, seconds: float
) -> dict[str, Any]:
    """pymemcache get of one key from a thread pool, as the backend keeps the loop free."""
    from pymemcache.client.base import PooledClient

    host, port = addr.rsplit(":", 1)
    client = PooledClient((host, int(port)), max_pool_size=pool_size, timeout=1.0)
    client.set("bench-floor", b"x")
    executor = ThreadPoolExecutor(threads, thread_name_prefix="bench-memcached")
    loop = asyncio.get_running_loop()
    try:

        async def get(i: int) -> None:
            await loop.run_in_executor(executor, client.get, "bench-floor")

        return {f"floor@{c}": await rate(get, c, seconds) for c in CONCURRENCIES}
    finally:
        executor.shutdown(wait=True)
        client.close()


async def run(seconds: float, redis_port: int | None, memcached_port: int | None) -> dict[str, Any]:
    redis_url = f"redis://{HOST}:{redis_port}/0" if redis_port else None
    memcached_addr = f"{HOST}:{memcached_port}" if memcached_port else None
    factories = installed_backends()
    defaults = load_config(None, env={}).presence
    out: dict[str, Any] = {"backends": {}, "skipped": {}}
    for name in ("memory", "redis", "memcached"):
        if name not in factories:
            out["skipped"][name] = f"backend {name!r} is not installed (sanic_rt.backends.{name})"
            continue
        if name == "redis" and not redis_url:
            out["skipped"][name] = "redis-server is not on PATH"
            continue
        if name == "memcached" and not memcached_addr:
            out["skipped"][name] = "memcached is not on PATH"
            continue
        try:
            result = await bench_backend(name, factories[name], seconds, redis_url, memcached_addr)
            if name == "redis":
                assert redis_url
                result.update(await redis_floor(redis_url, defaults.redis.pool_size, seconds))
            elif name == "memcached":
                assert memcached_addr
                m = defaults.memcached
                result.update(
                    await memcached_floor(memcached_addr, m.pool_size, m.threads, seconds)
                )
            for key in list(result):
                op, _, c = key.partition("@")
                floor = result.get(f"floor@{c}")
                if floor and op != "floor":
                    result[key]["ratio_to_floor"] = result[key]["ops_per_s"] / floor["ops_per_s"]
            out["backends"][name] = result
        except Exception as err:  # one backend's failure must not lose the others' numbers
            out["skipped"][name] = f"failed: {type(err).__name__}: {err}"
    return out
