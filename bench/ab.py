"""``python -m bench.ab [CLIENTS] [ROUNDS] [memory|redis]``: issue 17's per-packet changes, A/B.

Runs the pings measurement (``bench/sockets.py: pings``) on sanic-rt with the
changes off (``bench/baseline.py``) and on, interleaved ROUNDS times in one run,
and prints acks per server CPU-second for each and their ratio. Absolute rates
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
from .sockets import Context, pings, sanic_rt_target


def main() -> int:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    backend = sys.argv[3] if len(sys.argv) > 3 else "memory"
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
                result = pings(ctx, target, clients)
                runs[name].append(result)
                print(
                    f"{name:>6}: {result['acks_per_server_cpu_s']:8.0f} acks/server CPU-s, "
                    f"{result['acks_per_s']:8.0f} acks/s, p99 {result['p99_ms']:.0f} ms, "
                    f"errors {result['errors']}",
                    flush=True,
                )
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    per_cpu = {k: [r["acks_per_server_cpu_s"] for r in v] for k, v in runs.items()}
    ratio = statistics.median(per_cpu["after"]) / statistics.median(per_cpu["before"])
    print(
        json.dumps(
            {
                "clients": clients,
                "backend": backend,
                "acks_per_server_cpu_s": per_cpu,
                "after_over_before": round(ratio, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
