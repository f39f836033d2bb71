"""``python -m bench.heartbeats [CLIENTS] [SECONDS] [ROUNDS] [--hog]``: heartbeats, in-process.

CLIENTS tasks call ``Presence.mark_user_online`` back to back (what an acked ``ping``
does, without the sockets), on the memory and the Redis backend interleaved ROUNDS
times in one run. Prints per backend: heartbeats/s, heartbeats per CPU-second of this
process, the share of its core it used, latency p50/p99, and for Redis the backend's
round trips (``touch`` calls) and their mean size. This process is pinned to the
server core, redis-server to the load core; ``--hog`` also keeps the load core busy
(a spinning process, as node's load generator does at 10,000 clients), so every
Redis reply waits for the scheduler there.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence

from .procs import Proc, cores, redis_proc

WARMUP = 2.0


def schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of this process's main thread.

    On a shared machine a low CPU share may mean the process was starved (it waited
    in the run queue), not that it waited on Redis: what is neither is time asleep.
    """
    with open(f"/proc/self/task/{os.getpid()}/schedstat") as fh:
        running, waiting, _ = fh.read().split()
    return int(running) / 1e9, int(waiting) / 1e9


async def run(
    backend: str, redis: Proc, clients: int, seconds: float, in_flight: int
) -> dict[str, Any]:
    port = redis.port or 0
    assert redis.ps is not None
    overrides: dict[str, Any] = {
        "presence.backend": backend,
        "presence.batches_in_flight": in_flight,
    }
    if backend == "redis":
        overrides["presence.redis.url"] = f"redis://127.0.0.1:{port}/0"
    host = PluginHost(load_config(env={}, overrides=overrides))
    host.load()
    config = host.config
    presence = Presence(host.backends()[backend](config, config.presence), config.presence, 10)
    calls = {"touch": 0, "connections": 0}
    touch = presence.backend.touch

    async def counted(conns: Any, now: float, activity: bool) -> Any:
        calls["touch"] += 1
        calls["connections"] += len(conns)
        return await touch(conns, now, activity)

    presence.backend.touch = counted  # type: ignore[method-assign]
    await presence.start()
    latencies: list[float] = []
    measuring = False
    stop = False

    async def client(i: int) -> None:
        user, sid = f"user{i}", f"sid{i}"
        await presence.connect(user, sid, "/chats")
        while not stop:
            t0 = time.perf_counter()
            await presence.mark_user_online(user, sid)
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(WARMUP)
    measuring = True
    calls.update(touch=0, connections=0)
    cpu0, t0, redis0 = time.process_time(), time.monotonic(), sum(redis.ps.cpu_times()[:2])
    run0, runq0 = schedstat()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    run1, runq1 = schedstat()
    redis_cpu = sum(redis.ps.cpu_times()[:2]) - redis0
    measuring, stop = False, True
    touches, touched = calls["touch"], calls["connections"]
    await asyncio.gather(*tasks, return_exceptions=True)
    await presence.close()
    latencies.sort()
    n = len(latencies)
    return {
        "backend": backend,
        "batches_in_flight": in_flight,
        "heartbeats_per_s": round(n / wall),
        "per_cpu_s": round(n / cpu) if cpu else None,
        "cpu_share": round(cpu / wall, 2),
        "run_queue_share": round((runq1 - runq0) / wall, 2),
        "asleep_share": round(1 - (run1 - run0 + runq1 - runq0) / wall, 2),
        "p50_ms": round(1000 * latencies[n // 2], 1) if n else None,
        "p99_ms": round(1000 * latencies[int(n * 0.99)], 1) if n else None,
        "redis_cpu_share": round(redis_cpu / wall, 2),
        "touch_calls": touches,
        "mean_touch_size": round(touched / touches) if touches else None,
    }


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    clients = int(args[0]) if args else 5000
    seconds = float(args[1]) if len(args) > 1 else 5.0
    rounds = int(args[2]) if len(args) > 2 else 2
    server_cpus, load_cpus = cores()
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-hb-"))
    redis = redis_proc(workdir, load_cpus)
    assert redis, "redis-server is not on PATH"
    redis.start()
    hog = None
    if "--hog" in sys.argv:
        spin = "while True: pass"
        hog = subprocess.Popen([sys.executable, "-c", spin])
        os.sched_setaffinity(hog.pid, load_cpus)
    os.sched_setaffinity(0, server_cpus)
    sides = {"memory": ("memory", 4), "redis/1": ("redis", 1), "redis/4": ("redis", 4)}
    rows: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    try:
        for _ in range(rounds):
            for side, (backend, in_flight) in sides.items():
                row = asyncio.run(run(backend, redis, clients, seconds, in_flight))
                rows[side].append(row)
                print(row, flush=True)
    finally:
        if hog is not None:
            hog.kill()
        redis.stop()
    for backend, runs in rows.items():
        print(
            backend,
            "median p50",
            statistics.median(r["p50_ms"] for r in runs),
            "p99",
            statistics.median(r["p99_ms"] for r in runs),
            "per cpu-s",
            statistics.median(r["per_cpu_s"] for r in runs),
            "cpu share",
            statistics.median(r["cpu_share"] for r in runs),
            "asleep",
            statistics.median(r["asleep_share"] for r in runs),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
