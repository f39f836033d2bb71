"""Where does the server's time go under ping load? py-spy on a pinned server.

Usage: ``python -m bench.profile [sanic-rt-memory|sanic-rt-redis|bare-asgi] [CLIENTS] [SECONDS]``
(``sanic-rt-memory-baseline``, ``sanic-rt-redis-baseline``: with issue 17's per-packet
changes off, ``bench/baseline.py``)

Starts the server and a node load generator like ``make bench`` does, samples the
server with ``py-spy record --format raw`` for SECONDS, and prints the functions with
the most samples: self time, and inclusive time of our own code and the layers under it.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .procs import cores, free_port, redis_proc
from .sockets import Context, bare_target, load_proc, sanic_rt_target, server_url

TOP = 25


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "sanic-rt-memory"
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-profile-"))
    server_cpus, load_cpus = cores()
    ctx = Context(workdir, server_cpus, load_cpus, 1.0)
    redis = None
    module = "bench.baseline" if which.endswith("-baseline") else "sanic_rt"
    which = which.removesuffix("-baseline")
    if which == "sanic-rt-redis":
        redis = redis_proc(workdir, server_cpus)
        assert redis, "redis-server is not on PATH"
        redis.start()
        url = f"redis://127.0.0.1:{redis.port}/0"
        target = sanic_rt_target(
            ctx, which, module, presence={"backend": "redis", "redis": {"url": url}}
        )
    elif which == "sanic-rt-memory":
        target = sanic_rt_target(ctx, which, module, presence={"backend": "memory"})
    else:
        target = bare_target(ctx, which.removeprefix("bare-"))
    port = free_port()
    server = target.make(port)
    load = None
    try:
        server.start()
        opts = {
            "mode": "pings",
            "url": server_url(port),
            "namespace": "/chats",
            "prefix": "prof-",
            "n": clients,
            "concurrency": 100,
            "warmupSeconds": 1.0,
            "seconds": seconds + 2,
            "ackTimeoutMs": 10000,
            "maxSeconds": 60 + clients / 50 + seconds,
        }
        load = load_proc(ctx, "load-profile", opts).start(capture=True)
        load.expect("ready", 60 + clients / 50)
        load.expect("measuring", 30)
        raw = workdir / "profile.txt"
        assert server.proc is not None
        argv = [spy, "record", "--pid", str(server.proc.pid), "--duration", str(int(seconds))]
        argv += ["--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"]
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            timeout=seconds + 30,
        )
        result = load.expect("result", seconds + 30)
        print(f"{which}: {result['acks_per_s']:.0f} acks/s with {result['clients']} clients")
        report(raw)
    finally:
        if load is not None:
            load.stop()
        server.stop()
        if redis is not None:
            redis.stop()
        time.sleep(0.1)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(raw: Path) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for frame in set(map(_short, frames)):
            inclusive[frame] += n
    print(f"\n{total} samples. Self time:")
    for frame, n in own.most_common(TOP):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nInclusive time (frames in sanic_rt, socketio, engineio, uvicorn, websockets):")
    layers = ("sanic_rt", "socketio", "engineio", "uvicorn", "websockets", "jwt", "backends")
    shown = [(f, n) for f, n in inclusive.most_common() if any(x in f for x in layers)]
    for frame, n in shown[:TOP]:
        print(f"  {100 * n / total:5.1f}%  {frame}")


def _short(frame: str) -> str:
    # "func (path/to/site-packages/pkg/mod.py:123)" -> "func (pkg/mod.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})"


if __name__ == "__main__":
    sys.exit(main())
