"""``python -m bench.soak_server serve ...``: sanic-rt plus an event-loop lag probe, for the soak.

The probe is a bench-only plugin: a task sleeping ``INTERVAL`` and recording how
late it wakes up, and ``GET /bench/lag`` answering the samples' percentiles since
the previous read (then forgetting them), and the samples themselves.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

import sanic_rt.server
from sanic_rt.cli import main
from sanic_rt.testing import inline_plugin

INTERVAL = 0.05
samples: list[float] = []
tasks: list[asyncio.Task[None]] = []


async def sample_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(INTERVAL)
        samples.append(max(0.0, loop.time() - start - INTERVAL))


def startup(app: Any) -> None:
    tasks.append(asyncio.get_running_loop().create_task(sample_lag()))


def register_routes(register: Any) -> None:
    probe = Blueprint("soak_probe")

    @probe.get("/bench/lag")
    async def lag(request: Request) -> HTTPResponse:
        taken = sorted(samples)
        samples.clear()

        def pct(p: float) -> float | None:
            return taken[min(len(taken) - 1, int(p * len(taken)))] * 1000 if taken else None

        summary = {"n": len(taken), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}
        return json(summary | {"samples_ms": [round(s * 1000, 3) for s in taken]})

    register(probe)


PROBE = inline_plugin("soak_probe", startup=startup, register_routes=register_routes)
sanic_rt.server.create_app = functools.partial(sanic_rt.server.create_app, extra_plugins=[PROBE])

if __name__ == "__main__":
    sys.exit(main())
