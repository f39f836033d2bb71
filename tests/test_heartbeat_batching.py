"""Coalesced heartbeats (sanic_rt/coalesce.py): bounded batches, several round trips at once.

With one batch in flight at a time, 10,000 back-to-back pings queued behind one Redis
round trip after the other while the server sat idle (issue 17, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sanic_rt.coalesce import Coalescer
from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence
from sanic_rt.presence_model import Timings

GATE_DEADLINE = 10.0


class Gate:
    """Holds each call until ``expected`` calls are in flight together (or a deadline)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = self.most = 0
        self.sizes: list[int] = []
        self._open = asyncio.Event()

    async def hold(self, size: int) -> None:
        self.sizes.append(size)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.expected:
            self._open.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GATE_DEADLINE):
                await self._open.wait()
        self._open.set()  # past the deadline: let everything through, the test fails

    def done(self) -> None:
        self.in_flight -= 1


async def test_batches_are_bounded_and_several_run_at_once():
    gate = Gate(expected=3)

    async def flush(items: list[int]) -> list[int]:
        await gate.hold(len(items))
        try:
            return [2 * i for i in items]
        finally:
            gate.done()

    batches: Coalescer[int, int] = Coalescer(flush, batch_size=5, max_in_flight=3)
    results = await asyncio.gather(*(batches.submit(i) for i in range(40)))
    assert results == [2 * i for i in range(40)]
    assert gate.most == 3  # never more than max_in_flight
    assert max(gate.sizes) <= 5 and sum(gate.sizes) == 40


async def test_close_fails_every_waiting_caller():
    release, two_in_flight = asyncio.Event(), asyncio.Event()
    flushes = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal flushes
        flushes += 1
        if flushes == 2:
            two_in_flight.set()
        await release.wait()  # never set: close() must end them
        return items

    batches: Coalescer[int, int] = Coalescer(flush, batch_size=2, max_in_flight=2)
    calls = [asyncio.ensure_future(batches.submit(i)) for i in range(7)]
    async with asyncio.timeout(GATE_DEADLINE):
        await two_in_flight.wait()
    await batches.close(RuntimeError("closing"))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes


async def test_heartbeats_on_redis_go_out_in_several_bounded_round_trips(redis_proc):
    overrides: dict[str, Any] = {
        "presence.backend": "redis",
        "presence.redis.url": f"redis://127.0.0.1:{redis_proc.port}/0",
        "presence.refresh_batch_size": 10,
        "presence.batches_in_flight": 4,
    }
    host = PluginHost(load_config(env={}, overrides=overrides))
    host.load()
    config = host.config
    timings = Timings(config.presence.ttl, config.presence.offline_grace, 100.0)
    presence = Presence(host.backends()["redis"](config, timings), config.presence, 5)
    in_flight = config.presence.batches_in_flight
    gate = Gate(expected=in_flight)
    touch = presence.backend.touch

    async def gated_touch(conns: Any, now: float, activity: bool) -> Any:
        await gate.hold(len(conns))
        try:
            return await touch(conns, now, activity)  # the real Redis round trip
        finally:
            gate.done()

    presence.backend.touch = gated_touch  # type: ignore[method-assign]
    await presence.start()
    users = [(f"user{i}", f"sid{i}") for i in range(100)]
    try:
        for user, sid in users:
            await presence.connect(user, sid, "/chats")
        statuses = await asyncio.gather(
            *(presence.mark_user_online(user, sid) for user, sid in users)
        )
        records = await presence.get_many([user for user, _ in users])
    finally:
        await presence.close()
    assert statuses == ["online"] * len(users)
    assert all(record.online for record in records.values())
    # several round trips in flight together, never more than configured
    assert gate.most == in_flight, gate.most
    assert max(gate.sizes) <= 10 and sum(gate.sizes) == len(users)
