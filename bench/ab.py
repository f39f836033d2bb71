"""``python -m bench.ab [pings|storm] [CLIENTS] [ROUNDS] [memory|redis]``: issue 17's changes, A/B.

Runs a measurement of ``bench/sockets.py`` (``pings``: acks per server CPU-second;
``storm``: connects per second) on sanic-rt with the changes off
(``bench/baseline.py``) and on, interleaved ROUNDS times in one run, and prints
both and their ratio. Absolute rates
drift on a shared machine; the interleaved ratio is what to read.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from .procs import cores, redis_proc
from .sockets import Context, pings, sanic_rt_target, storm

PER_CPU = "acks_per_server_cpu_s"


def main() -> int:
    args = sys.argv[1:]
    measure, metric = (
        (storm, "connects_per_server_cpu_s") if args[:1] == ["storm"] else (pings, PER_CPU)
    )
    if args[:1] in (["storm"], ["pings"]):
        args = args[1:]
    clients = int(args[0]) if args else 2000
    rounds = int(args[1]) if len(args) > 1 else 2
    backend = args[2] if len(args) > 2 else "memory"
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-ab-"))
    server_cpus, load_cpus = cores()
    ctx = Context(workdir, server_cpus, load_cpus, 1.0)
    redis = None
    presence: dict[str, Any] = {"backend": backend}
    if backend == "redis":
        redis = redis_proc(workdir, load_cpus)
        assert redis, "redis-server is not on PATH"
        redis.start()
        presence["redis"] = {"url": f"redis://127.0.0.1:{redis.port}/0"}
    sides = {
        "before": sanic_rt_target(ctx, "before", module="bench.baseline", presence=presence),
        "after": sanic_rt_target(ctx, "after", presence=presence),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    try:
        for _ in range(rounds):
            for name, target in sides.items():
                result = measure(ctx, target, clients)
                runs[name].append(result)
                keys = (metric, "connects_per_s", "rss_per_conn_kb", "p99_ms", "errors")
                shown = {k: result[k] for k in keys if k in result}
                print(f"{name:>6}: {json.dumps(shown)}", flush=True)
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    per_cpu = {k: [r[metric] for r in v] for k, v in runs.items()}
    ratio = statistics.median(per_cpu["after"]) / statistics.median(per_cpu["before"])
    print(
        json.dumps(
            {
                "clients": clients,
                "backend": backend,
                metric: per_cpu,
                "after_over_before": round(ratio, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
