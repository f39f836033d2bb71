"""``python -m bench.soak_server serve ...``: sanic-rt plus an event-loop lag probe, for the soak.

The probe is a bench-only plugin: a task sleeping ``INTERVAL`` and recording how
late it wakes up, and ``GET /bench/lag`` answering the samples' percentiles since
the previous read (then forgetting them), and the samples themselves;
``GET /bench/connections`` this worker's own connection counts. With
``SOAK_BASELINE=1`` in the environment, issue 17's changes are off (``bench/baseline.py``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib
import os
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


def innermost(task: asyncio.Task[Any]) -> str:
    """Where a task's coroutine chain is suspended (its innermost two frames)."""
    frames, coro = [], task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frames.append(f"{coro.cr_code.co_name}:{coro.cr_frame.f_lineno}")
        coro = coro.cr_await
    return " -> ".join(frames[-2:])


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

    @probe.get("/bench/connections")
    async def connections(request: Request) -> HTTPResponse:
        # This worker's own view, to tell a presence leak from a transport one.
        gateway = request.app.ctx.gateway
        sio = gateway.sio
        waiting = collections.Counter(innermost(task) for task in asyncio.all_tasks())
        return json(
            {
                "presence_local": len(gateway.presence.local),
                "engineio_sockets": len(sio.eio.sockets),
                "socketio_chats": sum(1 for _ in sio.manager.get_participants("/chats", None)),
                "tasks_waiting_in": dict(waiting.most_common(8)),
            }
        )

    register(probe)


if os.environ.get("SOAK_BASELINE"):
    importlib.import_module("bench.baseline")  # issue 17's changes off, for an A/B soak

PROBE = inline_plugin("soak_probe", startup=startup, register_routes=register_routes)
sanic_rt.server.create_app = functools.partial(sanic_rt.server.create_app, extra_plugins=[PROBE])

if __name__ == "__main__":
    sys.exit(main())
