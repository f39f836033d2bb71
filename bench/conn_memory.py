"""``python -m bench.conn_memory [N] [ROUNDS] [--trace] [--only=SIDE]``: memory per idle connection.

N (default 10,000) authenticated websocket clients (``js/load.js`` storm mode) connect
to ``/chats`` and stay idle; the server's RSS growth over them, divided by N, is the
cost per connection. The server runs with issue 17's changes off
(``bench/baseline.py``, "before"), with only its per-connection memory changes off
(``bench/baseline_memory.py``, "main") and with all on ("after"), interleaved
ROUNDS times (default 1) in one run: compare the ratios, not absolute numbers
from different runs.

With ``--trace`` one more run of each side has tracemalloc on (10 frames; this
slows connecting and inflates RSS, so those runs are not counted above): the
traced growth per connection, the top 25 allocation sites (file:line) and the
growth per package (the innermost frame outside the standard library).

``python -m bench.conn_memory serve ...`` is the server itself: sanic-rt's CLI
plus ``GET /bench/mem?op=mark|diff`` (bench-only). Both ops run a full
collection first, so both sides are read without pending garbage.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

from .procs import cores, free_port
from .sockets import Context, load_proc, sanic_rt_target, server_url

BASELINE_ENV = "CONN_MEMORY_BASELINE"
TRACE_ENV = "CONN_MEMORY_TRACE"
#: side -> the module that switches changes off in the server (None: all on)
SIDES = {"before": "bench.baseline", "main": "bench.baseline_memory", "after": None}
TRACE_FRAMES = 10
TOP = 25
_STDLIB = (sysconfig.get_paths()["stdlib"], "<frozen")
_marked: list[tracemalloc.Snapshot] = []


def _owner(frames: Any) -> str:
    """The package an allocation belongs to: its innermost frame outside the stdlib."""
    for frame in frames:  # most recent call first
        name = frame.filename
        if name.startswith(_STDLIB) or name.startswith("<"):
            continue
        if "site-packages/" in name:
            return name.split("site-packages/", 1)[1].split("/", 1)[0]
        if "/sanic_rt/" in name:
            return "sanic_rt"
        if "/bench/" in name:  # only the loop's run call above: C code (uvloop) allocating
            return "event loop (C)"
        return name.rsplit("/", 2)[-2]
    return "stdlib:" + Path(frames[0].filename).name


def _mem_report(op: str) -> dict[str, Any]:
    gc.collect()
    if op == "mark" and os.environ.get(TRACE_ENV):
        tracemalloc.start(TRACE_FRAMES)  # from here: start-up allocations are not the point
    if not tracemalloc.is_tracing():
        return {"tracing": False}
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if op == "mark" or not _marked:
        _marked[:] = [snap]
        return {"tracing": True, "marked": True}
    diff = snap.compare_to(_marked[0], "traceback")
    owners: dict[str, int] = {}
    for stat in diff:
        key = _owner(stat.traceback)
        owners[key] = owners.get(key, 0) + stat.size_diff
    lines = snap.compare_to(_marked[0], "lineno")
    return {
        "tracing": True,
        "traced_growth": sum(s.size_diff for s in lines),
        "by_owner": dict(sorted(owners.items(), key=lambda kv: -kv[1])),
        "top": [
            {
                "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                "size_diff": s.size_diff,
                "count_diff": s.count_diff,
            }
            for s in lines[:TOP]
        ],
    }


def _serve() -> int:
    import functools

    from sanic import Blueprint, Request
    from sanic.response import HTTPResponse
    from sanic.response import json as json_response

    import sanic_rt.server
    from sanic_rt.cli import main as cli_main
    from sanic_rt.testing import inline_plugin

    off = os.environ.get(BASELINE_ENV)
    if off:
        importlib.import_module(off)

    def register_routes(register: Any) -> None:
        probe = Blueprint("conn_memory_probe")

        @probe.get("/bench/mem")
        async def mem(request: Request) -> HTTPResponse:
            return json_response(_mem_report(request.args.get("op", "diff")))

        register(probe)

    probe = inline_plugin("conn_memory_probe", register_routes=register_routes)
    sanic_rt.server.create_app = functools.partial(  # type: ignore[assignment]
        sanic_rt.server.create_app, extra_plugins=[probe]
    )
    return cli_main()


def _get(port: int, op: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server_url(port)}/bench/mem?op={op}", timeout=120) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def measure(ctx: Context, side: str, n: int, trace: bool) -> dict[str, Any]:
    env_extra = {BASELINE_ENV: SIDES[side]} if SIDES[side] else {}
    if trace:
        env_extra[TRACE_ENV] = "1"
    target = sanic_rt_target(ctx, side, module="bench.conn_memory")
    port = free_port()
    server = target.make(port)
    server.env = {**(server.env or {}), **env_extra}
    server.start(ready_timeout=60)
    load = None
    try:
        _get(port, "mark")
        time.sleep(0.5)
        rss_before = server.rss()
        limit = 120 + n / 20
        opts = {
            "mode": "storm",
            "url": server_url(port),
            "namespace": "/chats",
            "prefix": f"mem{n}-",
            "n": n,
            "concurrency": 100,
            "holdSeconds": limit + 600,
            "maxSeconds": limit + 900,
        }
        load = load_proc(ctx, f"load-mem-{side}-{n}", opts).start(capture=True)
        connected = load.expect("connected", limit)
        ok = connected["connected"]
        # Idle: let the first Engine.IO pings go round, then read a settled RSS.
        idle = float(os.environ.get("CONN_MEMORY_IDLE", "30"))
        cpu0 = server.cpu_seconds()
        time.sleep(idle)
        idle_cpu = server.cpu_seconds() - cpu0
        report = _get(port, "diff")
        rss_after = _settled(server)
        load.send("close")
        load.expect("done", 60)
        result: dict[str, Any] = {
            "side": side,
            "traced": trace,
            "connected": ok,
            "failures": connected["failures"],
            "connects_per_s": round(connected["connects_per_s"], 1),
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_after_mb": round(rss_after / 2**20, 1),
            "rss_per_conn_kb": round((rss_after - rss_before) / ok / 1024, 2) if ok else None,
            # the server's CPU share while every client sits idle (Engine.IO pings only)
            "idle_cpu_share": round(idle_cpu / idle, 4),
        }
        if report.get("traced_growth") is not None and ok:
            result["traced_per_conn_kb"] = round(report["traced_growth"] / ok / 1024, 2)
            result["by_owner_per_conn_b"] = {
                k: round(v / ok) for k, v in report["by_owner"].items() if abs(v) / ok >= 16
            }
            result["top_per_conn_b"] = [
                {**t, "size_diff": round(t["size_diff"] / ok), "count_diff": t["count_diff"]}
                for t in report["top"]
            ]
        return result
    finally:
        if load is not None:
            load.stop()
        server.stop()


def _settled(server: Any, timeout: float = 10.0) -> int:
    last = server.rss()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.rss()
        if abs(now - last) < 64 * 1024:
            return int(now)
        last = now
    return int(last)


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args[:1] == ["serve"]:
        return _serve()
    trace = "--trace" in sys.argv
    only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")]
    n = int(args[0]) if args else 10_000
    rounds = int(args[1]) if len(args) > 1 else 1
    sides = only or list(SIDES)
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-mem-"))
    server_cpus, load_cpus = cores()
    ctx = Context(workdir, server_cpus, load_cpus, 1.0)
    results: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            for side in sides:
                results.append(measure(ctx, side, n, trace=False))
                print(json.dumps(results[-1]), flush=True)
        if trace:
            for side in sides:
                traced = measure(ctx, side, n, trace=True)
                results.append(traced)
                print(json.dumps(traced, indent=1), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_side = {
        side: [r["rss_per_conn_kb"] for r in results if r["side"] == side and not r["traced"]]
        for side in sides
    }
    print(json.dumps({"clients": n, "rss_per_conn_kb": per_side}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
