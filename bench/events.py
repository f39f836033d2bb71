"""Presence transitions per second with webhooks off and on, in-process.

Each op is a connect+disconnect pair of a new user with no offline grace: two
announced changes (online, offline). With webhooks on, every change becomes an
event that a receiver in another process (``python -m bench.events PORT``,
counting what it gets) must receive: the row also reports how long the
backlog took to drain after the load stopped, and the end-to-end event rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from typing import Any

from sanic_rt.config import load_config
from sanic_rt.events import PresenceEvents
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence

from .backends import rate
from .procs import HOST

CONCURRENCY = 64
SECRET = "bench-webhook-secret-of-at-least-32-bytes"
DRAIN_TIMEOUT = 120.0


def receiver_main(port: int) -> None:
    """A webhook receiver that counts events (no signature check: the sender is ours)."""
    from aiohttp import web

    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        count += len(json.loads(await request.read())["events"])
        return web.Response(status=204)

    async def total(_request: web.Request) -> web.Response:
        return web.json_response({"events": count})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", total)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{port}/count", timeout=5) as resp:
        return json.loads(resp.read())["events"]


async def bench_one(
    name: str, seconds: float, redis_url: str | None, receiver_port: int | None
) -> dict[str, Any]:
    overrides: dict[str, Any] = {"presence.backend": name, "presence.offline_grace": 0.0}
    if redis_url:
        overrides |= {"presence.redis.url": redis_url, "presence.redis.key_prefix": "bench"}
    if receiver_port is not None:
        overrides |= {
            "events.webhook.url": f"http://{HOST}:{receiver_port}/hook",
            "events.webhook.secret": SECRET,
            "events.webhook.queue_max": 10_000_000,  # measure, do not drop
        }
    config = load_config(None, env={}, overrides=overrides)
    host = PluginHost(config)
    host.load()
    p = config.presence
    backend = host.backends()[name](config, p)
    presence = Presence(backend, p, config.auth.max_connections_per_user)
    events = PresenceEvents(config, backend, host)
    presence.publisher = events.dispatch
    await presence.start()
    await events.start()
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    try:

        async def pair(i: int) -> None:
            uid = f"ev{run_id}-{i}"
            await presence.connect(uid, f"sid-{uid}", "/chats")
            await presence.disconnect(uid, f"sid-{uid}")

        before = received(receiver_port) if receiver_port else 0
        row = await rate(pair, CONCURRENCY, seconds)
        row["transitions_per_s"] = 2 * row["ops_per_s"]
        if receiver_port is not None:
            expected = before + 2 * row["ops"]
            t0 = time.perf_counter()
            while received(receiver_port) < expected:
                if time.perf_counter() - t0 > DRAIN_TIMEOUT:
                    row["undelivered"] = expected - received(receiver_port)
                    break
                await asyncio.sleep(0.05)
            drain = time.perf_counter() - t0
            row["drain_s"] = drain
            row["delivered_per_s"] = 2 * row["ops"] / (row["seconds"] + drain)
    finally:
        await presence.close()
        await events.close()
    return row


async def run(seconds: float, redis_port: int | None, receiver_port: int) -> dict[str, Any]:
    redis_url = f"redis://{HOST}:{redis_port}/0" if redis_port else None
    rows: dict[str, Any] = {}
    for name in ("memory", "redis"):
        if name == "redis" and not redis_url:
            continue
        rows[f"{name} webhooks off"] = await bench_one(name, seconds, redis_url, None)
        rows[f"{name} webhooks on"] = await bench_one(name, seconds, redis_url, receiver_port)
    return rows


if __name__ == "__main__":
    receiver_main(int(sys.argv[1]))
