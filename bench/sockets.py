"""Socket-level measurements (storm, pings, fan-out, cross-node) over real servers.

Every server runs pinned to the server core, the node load generator to the other;
CPU seconds of both are read with psutil around each measured window.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanic_rt.testing import to_toml

from .procs import HOST, Proc, free_port, poll

BENCH_DIR = Path(__file__).resolve().parent
JS_DIR = BENCH_DIR / "js"
NODE = "node"
#: the HS256 key sanic-rt is configured with for the bench (a throwaway, not a secret)
BENCH_SECRET = "bench-secret-that-is-at-least-32-bytes-long!"


@dataclass
class Target:
    """A server under test: how to start one fresh instance on a free port."""

    name: str
    make: Callable[[int], Proc]
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    workdir: Path
    server_cpus: set[int]
    load_cpus: set[int]
    scale: float

    def env(self) -> dict[str, str]:
        # Our own config only: no SANIC_RT_* overrides leak in from the caller's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}
        env["BENCH_JWT_SECRET"] = BENCH_SECRET
        return env


def sanic_rt_target(ctx: Context, name: str, module: str = "sanic_rt", **sections: Any) -> Target:
    """sanic-rt through its CLI; ``module="bench.baseline"`` for the A side of an A/B run."""

    def make(port: int) -> Proc:
        config: dict[str, Any] = {
            "server": {
                "mode": "dev",
                "host": HOST,
                "port": port,
                # The limiter still runs on every event; back-to-back pings from one
                # client must not be refused, or we would measure refusals.
                "events_per_second": 100_000.0,
                "events_burst": 1000,
            },
            "auth": {"secret": BENCH_SECRET},
        }
        for key, table in sections.items():
            config[key] = {**config.get(key, {}), **table}
        path = ctx.workdir / f"{name}-{port}.toml"
        path.write_text(to_toml(config))
        argv = [sys.executable, "-m", module, "serve", "--config", str(path)]
        env = ctx.env()
        if module != "sanic_rt":
            env["PYTHONPATH"] = str(BENCH_DIR.parent)
        return Proc(f"{name}-{port}", argv, ctx.workdir, ctx.server_cpus, port, env)

    return Target(name, make)


def bare_target(ctx: Context, mode: str) -> Target:
    def make(port: int) -> Proc:
        argv = [sys.executable, "-m", "bench.bare", mode, str(port)]
        env = {**ctx.env(), "PYTHONPATH": str(BENCH_DIR.parent)}
        return Proc(f"bare-{mode}-{port}", argv, ctx.workdir, ctx.server_cpus, port, env)

    return Target(f"bare-{mode}", make)


def node_target(ctx: Context) -> Target:
    def make(port: int) -> Proc:
        argv = [NODE, str(JS_DIR / "server.js"), str(port)]
        return Proc(f"node-server-{port}", argv, ctx.workdir, ctx.server_cpus, port, ctx.env())

    return Target("node", make)


def load_proc(ctx: Context, name: str, options: dict[str, Any]) -> Proc:
    argv = [NODE, str(JS_DIR / "load.js"), json.dumps(options)]
    return Proc(name, argv, ctx.workdir, ctx.load_cpus, env=ctx.env(), stdin=True)


def _scaled(ctx: Context, seconds: float, minimum: float = 1.0) -> float:
    return max(minimum, seconds * ctx.scale)


def storm(ctx: Context, target: Target, n: int) -> dict[str, Any]:
    """N clients connect to /chats; connects/s, latency, and RSS per idle connection."""
    port = free_port()
    server = target.make(port)
    server.start()
    load = None
    try:
        time.sleep(0.5)  # let start-up allocation settle before the baseline
        rss_before = server.rss()
        cpu_before = server.cpu_seconds()
        limit = 60 + n / 50
        opts = {
            "mode": "storm",
            "url": server_url(port),
            "namespace": "/chats",
            "prefix": f"storm{n}-",
            "n": n,
            "concurrency": 100,
            "holdSeconds": limit,
            "maxSeconds": limit + 30,
        }
        load = load_proc(ctx, f"load-storm-{target.name}-{n}", opts).start(capture=True)
        connected = load.expect("connected", limit)
        cpu = server.cpu_seconds() - cpu_before
        load_cpu = load.cpu_seconds()
        # Idle: wait until RSS stops growing (bounded), then read it.
        rss_after = _settled_rss(server)
        load.send("close")
        load.expect("done", 30)
        ok = connected["connected"]
        return {
            "server": target.name,
            "n": n,
            **{k: connected[k] for k in ("connected", "failures", "seconds", "p50_ms", "p99_ms")},
            "connects_per_s": connected["connects_per_s"],
            "server_cpu_s": cpu,
            "connects_per_server_cpu_s": ok / cpu if cpu > 0 else None,
            "load_cpu_s": load_cpu,
            "rss_before_mb": rss_before / 2**20,
            "rss_after_mb": rss_after / 2**20,
            "rss_per_conn_kb": (rss_after - rss_before) / ok / 1024 if ok else None,
        }
    finally:
        if load is not None:
            load.stop()
        server.stop()


def _settled_rss(server: Proc, timeout: float = 5.0) -> int:
    last = [server.rss()]

    def stable() -> bool:
        now = server.rss()
        steady = abs(now - last[0]) < 64 * 1024
        last[0] = now
        return steady

    time.sleep(0.5)
    poll(stable, timeout, interval=0.5)
    return last[0]


def server_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def pings(
    ctx: Context, target: Target, n: int, idle_rss: bool = False, large: bool = False
) -> dict[str, Any]:
    """N clients doing back-to-back acked pings: acks/s, per server CPU-second, latency.

    With ``idle_rss`` the clients first stay connected and idle until the server's RSS has
    settled, so that one connect of N clients gives connects/s, RSS per idle connection and
    then the pings. ``large`` (10,000 clients, where one round trip can take seconds): the
    warm-up lasts until every client has had an answer (bounded), the window is longer and
    an ack may take longer before it counts as a timeout.
    """
    port = free_port()
    server = target.make(port)
    server.start()
    load = None
    try:
        seconds = _scaled(ctx, 10.0 if large else 6.0, 1.5)
        warmup_max = 60 if large else 0
        ack_timeout_ms = 30_000 if large else 10_000
        connect_limit = 60 + n / 50
        idle: dict[str, Any] = {}
        if idle_rss:
            time.sleep(0.5)  # let start-up allocation settle before the baseline
            rss_before = server.rss()
            cpu_before = server.cpu_seconds()
        opts = {
            "mode": "pings",
            "url": server_url(port),
            "namespace": "/chats",
            "prefix": f"ping{n}-",
            "n": n,
            "concurrency": 100,
            "warmupSeconds": _scaled(ctx, 2.0, 0.5),
            "seconds": seconds,
            "warmupMaxSeconds": warmup_max,
            "ackTimeoutMs": ack_timeout_ms,
            "holdSeconds": 60 if idle_rss else 0,
            "maxSeconds": 120 + n / 50 + seconds + (60 if idle_rss else 0) + warmup_max,
        }
        load = load_proc(ctx, f"load-pings-{target.name}-{n}", opts).start(capture=True)
        ready = load.expect("ready", connect_limit)
        if idle_rss:
            connect_cpu = server.cpu_seconds() - cpu_before
            rss_after = _settled_rss(server)
            ok = ready["connected"]
            idle = {
                "connects_per_s": ready["connects_per_s"],
                "connect_seconds": ready["seconds"],
                "connect_p99_ms": ready["p99_ms"],
                "connects_per_server_cpu_s": ok / connect_cpu if connect_cpu > 0 else None,
                "rss_before_mb": rss_before / 2**20,
                "rss_after_mb": rss_after / 2**20,
                "rss_per_conn_kb": (rss_after - rss_before) / ok / 1024 if ok else None,
            }
            load.send("go")
        measuring = load.expect("measuring", 30 + warmup_max)
        cpu0, lcpu0 = server.cpu_seconds(), load.cpu_seconds()
        result = load.expect("result", seconds + 30)
        cpu, lcpu = server.cpu_seconds() - cpu0, load.cpu_seconds() - lcpu0
        load.expect("done", 30 + ack_timeout_ms / 1000)
        return {
            "server": target.name,
            "clients": result["clients"],
            "warmup_seconds": measuring.get("warmup_seconds"),
            "answered_before_window": measuring.get("answered"),
            "connect_failures": ready["failures"],
            "acks": result["acks"],
            "errors": result["errors"],
            "error_codes": result["error_codes"],
            "timeouts": result["timeouts"],
            "seconds": result["seconds"],
            "acks_per_s": result["acks_per_s"],
            "server_cpu_s": cpu,
            "acks_per_server_cpu_s": result["acks"] / cpu if cpu > 0 else None,
            "server_cpu_share": cpu / result["seconds"],
            "load_cpu_s": lcpu,
            "load_cpu_share": lcpu / result["seconds"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            **idle,
        }
    finally:
        if load is not None:
            load.stop()
        server.stop()


def fanout(ctx: Context, target: Target, subscribers: int, grace: float) -> dict[str, Any]:
    """A user's connect (and the end of its offline grace) to presence:update at N subscribers."""
    port = free_port()
    server = target.make(port)
    server.start()
    load = None
    try:
        rounds = max(3, round(10 * min(1.0, ctx.scale * 4)))
        timeout_ms = 10000
        opts = {
            "mode": "fanout",
            "url": server_url(port),
            "namespace": "/chats",
            "prefix": "fan-",
            "n": subscribers,
            "concurrency": 100,
            "rounds": rounds,
            "graceSeconds": grace,
            "roundTimeoutMs": timeout_ms,
            # connecting and subscribing N count against the load generator's hard limit too
            "maxSeconds": 60 + subscribers / 25 + rounds * (grace + 2 * timeout_ms / 1000),
        }
        load = load_proc(ctx, f"load-fanout-{target.name}", opts).start(capture=True)
        load.expect("ready", 60 + subscribers / 25)
        cpu0, lcpu0 = server.cpu_seconds(), load.cpu_seconds()
        result = load.expect("result", opts["maxSeconds"])
        # Both sides' CPU over the rounds: at 10,000 subscribers the load generator decoding
        # 10,000 updates per round is part of the latency measured.
        cpu, lcpu = server.cpu_seconds() - cpu0, load.cpu_seconds() - lcpu0
        load.expect("done", 30)
        result.pop("event")
        return {
            "server": target.name,
            "offline_grace_s": grace,
            **result,
            "server_cpu_s": cpu,
            "load_cpu_s": lcpu,
        }
    finally:
        if load is not None:
            load.stop()
        server.stop()


def cross_node(
    ctx: Context, node_a: Proc, node_b: Proc, messages: int, recover: bool = False
) -> dict[str, Any]:
    opts = {
        "recover": recover,
        "mode": "crossNode",
        "urlA": server_url(node_a.port or 0),
        "urlB": server_url(node_b.port or 0),
        "prefix": "xnode-",
        "messages": messages,
        "roundTimeoutMs": 5000,
        "maxSeconds": 30 + messages * 5,
    }
    load = load_proc(ctx, "load-cross-node", opts).start(capture=True)
    try:
        result = load.expect("result", opts["maxSeconds"])
        load.expect("done", 30)
        result.pop("event")
        return result
    finally:
        load.stop()
