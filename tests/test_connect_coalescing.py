"""Concurrent connects share Redis round trips (sanic_rt/coalesce.py) and keep the cap exact."""

from __future__ import annotations

import asyncio

import redis

from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence, TooManyConnections
from sanic_rt.presence_model import Timings

CAP = 3
USERS = 20


def reads_processed(port: int) -> int:
    """Redis's count of read events: one per request batch a client sends."""
    return int(redis.Redis(port=port).info("stats")["total_reads_processed"])


async def test_a_connect_storm_shares_round_trips_and_keeps_the_cap(redis_proc):
    overrides = {
        "presence.backend": "redis",
        "presence.redis.url": f"redis://127.0.0.1:{redis_proc.port}/0",
    }
    host = PluginHost(load_config(env={}, overrides=overrides))
    host.load()
    config = host.config
    timings = Timings(config.presence.ttl, config.presence.offline_grace, 100.0)
    presence = Presence(host.backends()["redis"](config, timings), config.presence, CAP)
    await presence.start()
    try:
        await presence.get_many(["warm-up"])  # the pool's first connection and the script
        before = reads_processed(redis_proc.port)
        attempts = [(f"user{u}", f"sid{u}-{i}") for i in range(CAP + 1) for u in range(USERS)]
        results = await asyncio.gather(
            *(presence.connect(user, sid, "/chats") for user, sid in attempts),
            return_exceptions=True,
        )
        reads = reads_processed(redis_proc.port) - before - 1  # minus the INFO itself
    finally:
        await presence.close()
    refused = [a for a, r in zip(attempts, results, strict=True) if isinstance(r, BaseException)]
    assert all(isinstance(r, (TooManyConnections, type(None))) for r in results), results
    # exactly one refusal per user: the cap is applied per connect, in order
    assert sorted(user for user, _ in refused) == sorted(f"user{u}" for u in range(USERS))
    # one round trip each would be len(attempts) reads
    assert reads <= len(attempts) // 4, reads
