"""``python -m bench`` (``make bench``): every measurement, then JSON, markdown and a chart.

Environment:
  BENCH_SCALE=0.05   scale client counts and durations down (development runs; results
                     then go to bench/results/scaled/, which git ignores)
  BENCH_ONLY=a,b     run only these sections: storm, pings, c10k, fanout, backends, cluster,
                     bus, events, metrics, topologies
  BENCH_OUT=DIR      write results there instead
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from . import backends, bus, report, sockets, topologies
from . import events as events_bench
from .procs import Proc, cores, free_port, memcached_proc, raise_fd_limit, redis_proc
from .sockets import Context, Target

BENCH_DIR = Path(__file__).resolve().parent
SECTIONS = (
    "storm",
    "pings",
    "c10k",
    "fanout",
    "backends",
    "cluster",
    "bus",
    "events",
    "metrics",
    "topologies",
)
STORM_SIZES = (2000, 5000)
PING_CLIENTS = (500, 2000)
#: issue 17: connects, idle RSS and pings at 10,000 clients, in one connect per server
C10K_CLIENTS = 10_000
FANOUT_SUBSCRIBERS = (1000, 10_000)
FANOUT_GRACE = 1.0
CROSS_NODE_MESSAGES = 200
BUS_FLOOD = 50_000
METRICS_CLIENTS = 1000
#: descriptors per process: 10,000 sockets plus the server's or generator's own
FD_LIMIT = 32_768
#: below this a process cannot hold 10,000 sockets and its own descriptors
FD_NEEDED = C10K_CLIENTS + 2048
#: off/on pairs, interleaved, so that drift in the machine's load hits both alike
METRICS_ROUNDS = 3


def scaled(n: int, scale: float, minimum: int = 20) -> int:
    return max(minimum, round(n * scale))


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _npm_version(package: str) -> str:
    path = BENCH_DIR / "node_modules" / package / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else "not installed"


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = ("python-socketio", "python-engineio", "sanic", "uvicorn", "websockets", "redis")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "redis_server": _version(["redis-server", "--version"]),
        "memcached": _version(["memcached", "--version"]),
        "packages": {p: _pkg_version(p) for p in packages}
        | {
            "pymemcache": _pkg_version("pymemcache"),
            "socket.io (npm)": _npm_version("socket.io"),
            "socket.io-client (npm)": _npm_version("socket.io-client"),
        },
        "load_average_at_start": os.getloadavg(),
    }


def _pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def installed_backend_names() -> set[str]:
    return set(backends.installed_backends())


class Bench:
    def __init__(self, scale: float, only: set[str], workdir: Path) -> None:
        server_cpus, load_cpus = cores()
        self.ctx = Context(workdir, server_cpus, load_cpus, scale)
        self.scale = scale
        self.only = only
        self.results: dict[str, Any] = {"notes": [], "errors": {}}
        self.redis: Proc | None = None
        self.backend_names = installed_backend_names()

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.results["notes"].append(text)

    def section(self, name: str, fn: Callable[[], Any]) -> None:
        if name not in self.only:
            return
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            self.results[name] = fn()
        except Exception as err:  # record it and carry on: the other sections still count
            traceback.print_exc()
            self.results["errors"][name] = f"{type(err).__name__}: {err}"
        print(f"   {name}: {time.monotonic() - t0:.0f}s", flush=True)

    # --- the servers -------------------------------------------------------------

    def targets(self) -> list[Target]:
        ctx = self.ctx
        found = [sockets.sanic_rt_target(ctx, "sanic-rt-memory", presence={"backend": "memory"})]
        redis_target = self.sanic_rt_redis("sanic-rt-redis")
        if redis_target:
            found.append(redis_target)
        found += [
            sockets.bare_target(ctx, "asgi"),
            sockets.bare_target(ctx, "sanic"),
            sockets.node_target(ctx),
        ]
        return found

    def sanic_rt_redis(self, name: str, **sections: Any) -> Target | None:
        if "redis" not in self.backend_names:
            self.note("sanic-rt with the Redis backend skipped: sanic_rt.backends.redis missing")
            return None
        if self.redis is None:
            self.note("sanic-rt with the Redis backend skipped: redis-server is not on PATH")
            return None
        url = f"redis://127.0.0.1:{self.redis.port}/0"
        presence = {"backend": "redis", "redis": {"url": url}, **sections.pop("presence", {})}
        base = sockets.sanic_rt_target(self.ctx, name, presence=presence, **sections)
        redis_port = self.redis.port

        def make(port: int) -> Proc:
            _flush_redis(redis_port)  # each server starts from an empty store
            return base.make(port)

        return Target(name, make)

    # --- the sections ------------------------------------------------------------

    def storm(self) -> list[dict[str, Any]]:
        rows = []
        for n in STORM_SIZES:
            for target in self.targets():
                size = scaled(n, self.scale)
                print(f"   storm {target.name} n={size}", flush=True)
                row = sockets.storm(self.ctx, target, size)
                row["nominal_n"] = n
                rows.append(row)
        return rows

    def pings(self) -> list[dict[str, Any]]:
        rows = []
        for n in PING_CLIENTS:
            for target in self.targets():
                size = scaled(n, self.scale)
                print(f"   pings {target.name} clients={size}", flush=True)
                row = sockets.pings(self.ctx, target, size)
                row["nominal_clients"] = n
                rows.append(row)
        return rows

    def c10k(self) -> list[dict[str, Any]]:
        """10,000 clients per server: connects/s, RSS per idle connection, then pings.

        One connect per server: the clients connect, stay idle until the server's RSS has
        settled, then ping back to back as in ``pings``. sanic-rt (memory) and Node run next
        to each other, then Redis; the ratio to 2,000 clients reads the ``pings`` rows.
        """
        found = [
            sockets.sanic_rt_target(self.ctx, "sanic-rt-memory", presence={"backend": "memory"}),
            sockets.node_target(self.ctx),
        ]
        redis_target = self.sanic_rt_redis("sanic-rt-redis")
        if redis_target:
            found.append(redis_target)
        n = scaled(C10K_CLIENTS, self.scale)
        rows = []
        for target in found:
            print(f"   c10k {target.name} clients={n}", flush=True)
            row = sockets.pings(self.ctx, target, n, idle_rss=True, large=True)
            row["nominal_clients"] = C10K_CLIENTS
            if row["load_cpu_share"] > 0.9:
                self.note(
                    f"c10k {target.name}: the load generator used {row['load_cpu_share']:.0%} "
                    "of its core: the acks/s may be the generator's ceiling, not the server's "
                    "(acks per server CPU-second still compare)"
                )
            rows.append(row)
        return rows

    def fanout(self) -> list[dict[str, Any]]:
        fast = {"offline_grace": FANOUT_GRACE}
        targets = [
            sockets.sanic_rt_target(
                self.ctx, "sanic-rt-memory", presence={"backend": "memory", **fast}
            )
        ]
        redis_target = self.sanic_rt_redis("sanic-rt-redis", presence=fast)
        if redis_target:
            targets.append(redis_target)
        rows = []
        for nominal in FANOUT_SUBSCRIBERS:
            for target in targets:
                n = scaled(nominal, self.scale)
                print(f"   fanout {target.name} subscribers={n}", flush=True)
                row = sockets.fanout(self.ctx, target, n, FANOUT_GRACE)
                row["nominal_subscribers"] = nominal
                rows.append(row)
        return rows

    def backends(self) -> dict[str, Any]:
        memcached = memcached_proc(self.ctx.workdir, self.ctx.load_cpus)
        seconds = max(0.3, 1.5 * self.scale)
        # This process takes the server's core; the storage servers are on the other.
        previous = os.sched_getaffinity(0)
        try:
            if memcached:
                memcached.start()
            os.sched_setaffinity(0, self.ctx.server_cpus)
            redis_port = self.redis.port if self.redis else None
            _flush_redis(redis_port)
            return _run_async(
                backends.run(seconds, redis_port, memcached.port if memcached else None)
            )
        finally:
            os.sched_setaffinity(0, previous)
            if memcached:
                memcached.stop()

    def cluster(self) -> dict[str, Any]:
        target = self.sanic_rt_redis("sanic-rt-node", cluster={"manager": "redis"})
        if target is None:
            return {"skipped": "needs the Redis backend and redis-server"}
        node_a = target.make(free_port())
        node_b = target.make(free_port())
        try:
            # _flush_redis ran for each make(); start both only now.
            node_a.start()
            node_b.start()
            messages = scaled(CROSS_NODE_MESSAGES, self.scale)
            result = sockets.cross_node(self.ctx, node_a, node_b, messages)
        finally:
            node_a.stop()
            node_b.stop()
        for note in result.pop("notes", []):
            self.note(note)
        return result

    def bus(self) -> dict[str, Any]:
        if self.redis is None:
            return {"skipped": "needs redis-server"}
        messages = scaled(CROSS_NODE_MESSAGES, self.scale)
        return bus.run(self.ctx, self.redis.port, messages, scaled(BUS_FLOOD, self.scale, 2000))

    def events(self) -> dict[str, Any]:
        """Presence transitions/s with webhooks off and on (the receiver on the load core)."""
        port = free_port()
        receiver = Proc(
            "webhook-receiver",
            [sys.executable, "-m", "bench.events", str(port)],
            self.ctx.workdir,
            self.ctx.load_cpus,
            port=port,
            env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
        )
        previous = os.sched_getaffinity(0)
        try:
            receiver.start()
            os.sched_setaffinity(0, self.ctx.server_cpus)
            _flush_redis(self.redis.port if self.redis else None)
            seconds = max(0.5, 3 * self.scale)
            return _run_async(
                events_bench.run(seconds, self.redis.port if self.redis else None, port)
            )
        finally:
            os.sched_setaffinity(0, previous)
            receiver.stop()

    def metrics(self) -> dict[str, Any]:
        """Acked pings per server CPU-second with [metrics] on and off, interleaved."""
        n = scaled(METRICS_CLIENTS, self.scale)
        rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for round_no in range(METRICS_ROUNDS):
            for state in ("off", "on"):
                target = sockets.sanic_rt_target(
                    self.ctx,
                    f"sanic-rt-metrics-{state}",
                    presence={"backend": "memory"},
                    metrics={"enabled": state == "on"},
                )
                print(f"   metrics {state} round {round_no + 1} clients={n}", flush=True)
                rows[state].append(sockets.pings(self.ctx, target, n))
        return report.metrics_cost(rows)

    def topologies(self) -> dict[str, Any]:
        """The Redis backend on one server, Sentinel and Cluster, side by side."""
        seconds = max(0.3, 1.5 * self.scale)
        redis_port = self.redis.port if self.redis else None
        return _run_async(topologies.run(redis_port, self.ctx.workdir, seconds, self.scale))

    def run(self) -> dict[str, Any]:
        self.results["machine"] = machine()
        self.results["scale"] = self.scale
        self.results["pinning"] = {
            "server_cpus": sorted(self.ctx.server_cpus),
            "load_cpus": sorted(self.ctx.load_cpus),
        }
        # Storage servers share the generator's core: the server core holds the server alone.
        redis = redis_proc(self.ctx.workdir, self.ctx.load_cpus)
        try:
            if redis:
                self.redis = redis.start()
            for name in SECTIONS:
                self.section(name, getattr(self, name))
        finally:
            if redis:
                redis.stop()
        self.results["machine"]["load_average_at_end"] = os.getloadavg()
        return self.results


def _flush_redis(port: int | None) -> None:
    if port is None:
        return
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        client.flushall()
    finally:
        client.close()


def _run_async(coro: Any) -> Any:
    # The servers run under uvloop (uvicorn's "auto" picks it); so do the in-process benches.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> int:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    only = set(filter(None, os.environ.get("BENCH_ONLY", ",".join(SECTIONS)).split(",")))
    if unknown := only - set(SECTIONS):
        print(f"BENCH_ONLY: unknown sections {sorted(unknown)}; have {SECTIONS}", file=sys.stderr)
        return 2
    if shutil.which("node") is None or not (BENCH_DIR / "node_modules" / "socket.io").exists():
        print("node and bench/node_modules are needed: run `make bench`", file=sys.stderr)
        return 2
    default_out = BENCH_DIR / "results" / ("" if scale == 1 else "scaled")
    out_dir = Path(os.environ.get("BENCH_OUT", default_out))
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-bench-"))
    # A server or a load generator holding 10,000 sockets; the children inherit the limit.
    # (Raising the hard limit needs CAP_SYS_RESOURCE; otherwise the soft goes up to it.)
    fd_limit = raise_fd_limit(FD_LIMIT)
    print(f"bench: scale {scale}, sections {sorted(only)}, logs in {workdir}", flush=True)
    try:
        bench = Bench(scale, only, workdir)
        if fd_limit < FD_NEEDED:
            bench.note(f"RLIMIT_NOFILE is {fd_limit}, under {FD_NEEDED}: 10,000 clients may fail")
        results = bench.run()
    except BaseException:
        print(f"bench failed; logs kept in {workdir}", file=sys.stderr)
        raise
    results["date"] = stamp
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["fd_limit"] = fd_limit
    soak_dirs = [out_dir, BENCH_DIR / "results"]
    if scale != 1:
        soak_dirs.append(BENCH_DIR / "results" / "scaled")
    json_path = out_dir / f"{stamp}.json"
    md_path, png_path = report.write(results, json_path, soak_dirs)
    if results["errors"]:
        print(f"bench: sections failed: {results['errors']}; logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"bench: {results['wall_seconds']}s; wrote {json_path}, {md_path}, {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
