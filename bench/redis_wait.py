"""``python -m bench.redis_wait [CLIENTS] [ROUNDS] [IN_FLIGHT...]``: the Redis wait, A/B.

CLIENTS socket.io clients doing back-to-back acked pings (``bench/sockets.py: pings``,
with ``large``'s longer warm-up and window) against sanic-rt with the memory backend and
with the Redis backend at each ``[presence] batches_in_flight`` given (default 1, the
behaviour before issue 17's Redis wait was found, and 4, the default), interleaved ROUNDS
times in one run (``--hiredis``: each Redis side also with redis-py's pure-Python reply
parser, ``bench/no_hiredis.py``). Prints each run and the medians of ack p50/p99, acks per server
CPU-second, the server's share of a core; each run also prints redis-server's
CPU-seconds over the whole run (connects, warm-up, window).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis as redis_py

from .procs import cores, redis_proc
from .sockets import Context, Target, pings, sanic_rt_target

KEYS = ("p50_ms", "p99_ms", "acks_per_server_cpu_s", "server_cpu_share", "acks_per_s")


def main() -> int:
    hiredis_ab = "--hiredis" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    clients = int(args[0]) if args else 5000
    rounds = int(args[1]) if len(args) > 1 else 2
    in_flight = [int(a) for a in args[2:]] or [1, 4]
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-redis-wait-"))
    server_cpus, load_cpus = cores()
    ctx = Context(workdir, server_cpus, load_cpus, 1.0)
    redis = redis_proc(workdir, load_cpus)
    assert redis, "redis-server is not on PATH"
    redis.start()
    assert redis.ps is not None
    url = f"redis://127.0.0.1:{redis.port}/0"
    sides: dict[str, Target] = {
        "memory": sanic_rt_target(ctx, "memory", presence={"backend": "memory"})
    }
    for n in in_flight:
        presence = {"backend": "redis", "redis": {"url": url}, "batches_in_flight": n}
        sides[f"redis/{n}"] = sanic_rt_target(ctx, f"redis-{n}", presence=presence)
        if hiredis_ab:
            sides[f"redis/{n} no hiredis"] = sanic_rt_target(
                ctx, f"redis-{n}-nohiredis", module="bench.no_hiredis", presence=presence
            )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    try:
        for _ in range(rounds):
            for name, target in sides.items():
                redis_py.Redis(port=redis.port).flushall()  # each server starts empty
                redis_cpu0 = sum(redis.ps.cpu_times()[:2])
                result = pings(ctx, target, clients, large=True)
                # the whole run (connects, warm-up, window): a share of the window's length
                redis_cpu = sum(redis.ps.cpu_times()[:2]) - redis_cpu0
                result["redis_cpu_s_whole_run"] = round(redis_cpu, 2)
                runs[name].append(result)
                shown = {k: result.get(k) for k in (*KEYS, "errors", "timeouts")}
                shown["redis_cpu_s_whole_run"] = result["redis_cpu_s_whole_run"]
                shown["warmup_seconds"] = result["warmup_seconds"]
                print(f"{name:>8}: {json.dumps(shown)}", flush=True)
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        name: {
            k: round(statistics.median(r[k] for r in rs), 3)
            for k in KEYS
            if all(r.get(k) is not None for r in rs)
        }
        for name, rs in runs.items()
    }
    print(json.dumps({"clients": clients, "rounds": rounds, "medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
