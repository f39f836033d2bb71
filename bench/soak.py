"""``python -m bench.soak`` (``make soak``): one sanic-rt worker with Redis under churn.

SOAK_CLIENTS clients (10,000) connect to ``/chats``; then for SOAK_SECONDS (600)
SOAK_CHURN clients per second (50) disconnect and as many new ones connect, every
client pings every SOAK_PING_SECONDS (5) and SOAK_CHAT_FRACTION of them (1%)
also send a ``chat:message`` to a joined conversation each time. Every
SOAK_SAMPLE_SECONDS the server's RSS and CPU and its event-loop lag (a probe task
in the server, ``bench/soak_server.py``) are read. At the end the churn stops and
``/api/v1/presence/stats`` must come to equal the clients actually connected
once the offline grace has passed.

"Actually connected" is counted once every connect still in flight when the churn
stopped has ended (connected, refused, or given up on after SOAK_SETTLE_SECONDS and
closed): on a starved server a connect takes seconds, and clients that connected
after the count would otherwise look like connections the server kept. The
comparison asks the load generator for its current count each time, and waits
up to ping interval + ping timeout + the offline grace (and a margin): a client that
vanished without a close is only noticed by Engine.IO's heartbeat.

SOAK_SERVER_DUTY (a fraction, default 1) starves the server on purpose: it is stopped
(SIGSTOP) for the rest of every 100 ms, as on a machine whose other work takes most of
the server's core; a small run reproduces what an overloaded server does under churn.

SOAK_SCALE=0.2 scales clients and duration down for a smoke run (about 2 minutes);
scaled results go to bench/results/scaled/, full ones to bench/results/:
``soak-<date>.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sanic_rt.config import ServerConfig

from .__main__ import machine
from .procs import Proc, cores, free_port, poll, redis_proc
from .sockets import Context, load_proc, sanic_rt_target, server_url

BENCH_DIR = Path(__file__).resolve().parent
OFFLINE_GRACE = 2.0
# The server's defaults (sanic_rt.config.ServerConfig), which the soak does not change.
PING_INTERVAL, PING_TIMEOUT = ServerConfig.ping_interval, ServerConfig.ping_timeout
# How long the comparison at the end may wait for the server to catch up: a connection
# whose client vanished without a close ends after ping interval + ping timeout.
SETTLE_BOUND = PING_INTERVAL + PING_TIMEOUT + OFFLINE_GRACE + 15
TARGETS = {"rss_slope_mb_per_min": 1.0, "loop_lag_p99_ms": 50.0}


def settings() -> dict[str, float]:
    scale = float(os.environ.get("SOAK_SCALE", "1"))

    def env(name: str, default: float) -> float:
        return float(os.environ.get(name, default))

    seconds = env("SOAK_SECONDS", 600 * scale)
    return {
        "scale": scale,
        "clients": round(env("SOAK_CLIENTS", 10_000 * scale)),
        "seconds": seconds,
        "churn_per_second": env("SOAK_CHURN", 50),
        "ping_seconds": env("SOAK_PING_SECONDS", 5),
        "chat_fraction": env("SOAK_CHAT_FRACTION", 0.01),
        "sample_seconds": env("SOAK_SAMPLE_SECONDS", 5),
        # How long the connects in flight when the churn stops may take to be answered.
        "settle_seconds": env("SOAK_SETTLE_SECONDS", 30),
        "server_duty": env("SOAK_SERVER_DUTY", 1.0),
        # RSS grows while caches, pools and the allocator's arenas fill; the slope
        # that matters is the one after that.
        "warmup_seconds": env("SOAK_WARMUP_SECONDS", seconds / 5),
    }


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 3:
        return None
    ts, ys = [p[0] for p in points], [p[1] for p in points]
    return statistics.linear_regression(ts, ys).slope * 60


class Throttle:
    """Runs a process ``duty`` of every ``period`` seconds (SIGSTOP/SIGCONT), until stopped."""

    def __init__(self, pid: int, duty: float, period: float = 0.1) -> None:
        self.pid, self.duty, self.period = pid, duty, period
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopping.wait(self.duty * self.period):
                os.kill(self.pid, signal.SIGSTOP)
                self.stopping.wait((1 - self.duty) * self.period)
                os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> Throttle:
        if self.duty < 1:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Soak:
    def __init__(self, cfg: dict[str, float], workdir: Path) -> None:
        self.cfg = cfg
        server_cpus, load_cpus = cores()
        self.ctx = Context(workdir, server_cpus, load_cpus, cfg["scale"])
        self.samples: list[dict[str, Any]] = []
        self.ticks: list[dict[str, Any]] = []
        self.lag_ms: list[float] = []
        self.unanswered_probes = 0

    def run(self) -> dict[str, Any]:
        redis = redis_proc(self.ctx.workdir, self.ctx.load_cpus)
        assert redis is not None, "redis-server is not on PATH"
        redis.start()
        presence = {
            "backend": "redis",
            "offline_grace": OFFLINE_GRACE,
            "redis": {"url": f"redis://127.0.0.1:{redis.port}/0"},
        }
        target = sanic_rt_target(self.ctx, "soak", "bench.soak_server", presence=presence)
        server = target.make(free_port())
        load = None
        try:
            server.start()
            load = load_proc(self.ctx, "load-soak", self.load_options(server)).start(capture=True)
            ready = load.expect("ready", 120 + self.cfg["clients"] / 20)
            print(
                f"  ramp-up: {ready['connected']} connected in {ready['seconds']:.0f}s", flush=True
            )
            assert server.proc is not None
            with Throttle(server.proc.pid, self.cfg["server_duty"]):
                final = self.sample_until_final(server, load)
                stats = self.settle_stats(server, load)
            load.send("close")
            load.expect("done", 60)
            return self.summary(ready, final, stats)
        finally:
            if load is not None:
                load.stop()
            server.stop()
            redis.stop()

    def load_options(self, server: Proc) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "mode": "soak",
            "url": server_url(server.port or 0),
            "namespace": "/chats",
            "prefix": "soak-",
            "n": int(cfg["clients"]),
            "concurrency": 100,
            "seconds": cfg["seconds"],
            "churnPerSecond": cfg["churn_per_second"],
            "pingSeconds": cfg["ping_seconds"],
            "chatFraction": cfg["chat_fraction"],
            "reportSeconds": cfg["sample_seconds"],
            "ackTimeoutMs": 10000,
            "settleSeconds": cfg["settle_seconds"],
            "holdSeconds": 60 + SETTLE_BOUND,
            "maxSeconds": 300 + cfg["clients"] / 20 + cfg["seconds"] + cfg["settle_seconds"],
        }

    def sample_until_final(self, server: Proc, load: Proc) -> dict[str, Any]:
        started = time.monotonic()
        cpu0 = server.cpu_seconds()
        get_json(server_url(server.port or 0) + "/bench/lag")  # forget the ramp-up's samples
        while True:
            message = load.message(self.cfg["seconds"] + self.cfg["settle_seconds"] + 120)
            if message.get("event") == "final":
                return message
            if message.get("event") != "tick":
                raise RuntimeError(f"unexpected from the load generator: {message}")
            lag = self.read_lag(server)
            self.lag_ms += lag["samples_ms"]
            self.ticks.append(message)
            self.samples.append(
                {
                    "t": time.monotonic() - started,
                    "rss_mb": server.rss() / 2**20,
                    "cpu_s": server.cpu_seconds() - cpu0,
                    "connected": message["connected"],
                    "loop_lag_p99_ms": lag["p99_ms"],
                    "ack_p99_ms": message["ack_p99_ms"],
                }
            )
            print(f"  {json.dumps(self.samples[-1] | {'errors': message['errors']})}", flush=True)

    def read_lag(self, server: Proc) -> dict[str, Any]:
        """The probe's samples since the last read; none if the server did not answer in time."""
        try:
            lag: dict[str, Any] = get_json(server_url(server.port or 0) + "/bench/lag", 30)
        except OSError as err:  # TimeoutError included: a saturated server is a finding
            print(f"  lag probe unanswered: {err}", flush=True)
            self.unanswered_probes += 1
            return {"samples_ms": [], "p99_ms": None}
        return lag

    def settle_stats(self, server: Proc, load: Proc) -> dict[str, Any]:
        """Poll the presence stats until they equal the clients connected now (bounded)."""
        url = server_url(server.port or 0) + "/api/v1/presence/stats"
        last: dict[str, Any] = {}
        started = time.monotonic()

        def equal() -> bool:
            last.update(get_json(url)["data"])
            load.send("count")  # the clients' own figure, at the same moment
            last["clients_connected"] = load.expect("count", 30)["connected"]
            connected = last["clients_connected"]
            return bool(last["online_users"] == connected == last["connections"])

        matched = poll(equal, SETTLE_BOUND, interval=0.5)
        own = get_json(server_url(server.port or 0) + "/bench/connections", 30)
        return {
            **last,
            "equal": bool(matched),
            "waited_s": time.monotonic() - started,
            "server_own_counts": own,
        }

    def summary(
        self, ready: dict[str, Any], final: dict[str, Any], stats: dict[str, Any]
    ) -> dict[str, Any]:
        warm = [(s["t"], s["rss_mb"]) for s in self.samples if s["t"] >= self.cfg["warmup_seconds"]]
        cpu = self.samples[-1]["cpu_s"] if self.samples else None
        final = {k: v for k, v in final.items() if k != "event"}
        return {
            "ramp_up": {k: v for k, v in ready.items() if k != "event"},
            "final": final,
            "presence_stats_after_grace": stats,
            # The clients' own count at the last comparison (final's if none answered).
            "connected_at_end": stats.get("clients_connected", final["connected"]),
            "rss_slope_mb_per_min": slope_mb_per_min(warm),
            "rss_mb_first_last": [self.samples[0]["rss_mb"], self.samples[-1]["rss_mb"]]
            if self.samples
            else None,
            "loop_lag_p99_ms": percentile(self.lag_ms, 0.99),
            "loop_lag_max_ms": max(self.lag_ms) if self.lag_ms else None,
            "lag_probes_unanswered": self.unanswered_probes,
            "ack_p99_ms": final["ack_p99_ms"],
            "errors": final["errors"] + final["timeouts"] + final["unexpected_disconnects"],
            "server_cpu_share": cpu / final["seconds"] if cpu else None,
            "samples": self.samples,
        }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    stats = result["presence_stats_after_grace"]
    rows = [
        ("RSS slope after warm-up (MB/min)", result["rss_slope_mb_per_min"], "≤ 1"),
        ("event-loop lag p99 (ms)", result["loop_lag_p99_ms"], "≤ 50"),
        (
            "presence stats vs connected clients after the grace",
            f"{stats.get('online_users')} users / {stats.get('connections')} connections "
            f"vs {result['connected_at_end']} clients",
            "equal",
        ),
        ("ack p99 (ms)", result["ack_p99_ms"], "—"),
        ("errors (error acks + ack timeouts + unexpected disconnects)", result["errors"], "—"),
    ]
    met = {
        0: result["rss_slope_mb_per_min"] is not None
        and result["rss_slope_mb_per_min"] <= TARGETS["rss_slope_mb_per_min"],
        1: result["loop_lag_p99_ms"] is not None
        and result["loop_lag_p99_ms"] <= TARGETS["loop_lag_p99_ms"],
        2: bool(stats.get("equal")),
    }
    return [
        {"target": name, "measured": value, "goal": goal, "met": met.get(i)}
        for i, (name, value, goal) in enumerate(rows)
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    cfg = result["settings"]
    lines = [
        f"# make soak, {result['date']}",
        "",
        f"{int(cfg['clients']):,} clients on one worker with Redis for {cfg['seconds']:.0f} s: "
        f"{cfg['churn_per_second']:.0f} connects and as many disconnects per second, a ping "
        f"every {cfg['ping_seconds']:.0f} s, {100 * cfg['chat_fraction']:.0f}% chatting "
        f"(scale {cfg['scale']}). Machine: {result['machine']}.",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for row in result["targets"]:
        met = {True: "yes", False: "no", None: ""}[row["met"]]
        lines.append(f"| {row['target']} | {_fmt(row['measured'])} | {row['goal']} | {met} |")
    final = result["final"]
    lines += [
        "",
        f"Ramp-up: {result['ramp_up']['connected']:,} connected in "
        f"{result['ramp_up']['seconds']:.0f} s ({result['ramp_up']['failures']} failures). "
        f"During the soak: {final['acks']:,} acks (p50 {_fmt(final['ack_p50_ms'])} ms), "
        f"{final['connects']:,} connects ({final['connect_failures']} failed; "
        f"{final['connected_at_stop']:,} connected and "
        f"{final['connects_pending_at_stop']} still in flight when the churn stopped, "
        f"{final['connects_abandoned']} of them unanswered after "
        f"{_fmt(final['connects_settle_s'])} s and closed), "
        f"{final['disconnects']:,} disconnects, {final['chats']:,} chat messages; "
        f"error acks {final['errors']} {final['error_codes']}, ack timeouts "
        f"{final['timeouts']}, unexpected disconnects {final['unexpected_disconnects']}. "
        f"RSS {_fmt(result['rss_mb_first_last'][0])} -> "
        f"{_fmt(result['rss_mb_first_last'][1])} MB; loop lag max "
        f"{_fmt(result['loop_lag_max_ms'])} ms; server CPU share "
        f"{_fmt(result['server_cpu_share'])}.",
        "",
    ]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [
        ("rss_mb", "server RSS (MB)"),
        ("connected", "connected clients"),
        ("loop_lag_p99_ms", "event-loop lag p99 per sample (ms)"),
        ("ack_p99_ms", "ack p99 per sample (ms)"),
    ]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        ax.plot(t, [s[key] if s[key] is not None else float("nan") for s in samples])
        ax.set_title(title, fontsize=9)
        ax.axvline(result["settings"]["warmup_seconds"] / 60, color="#cccccc", linewidth=1)
    axes[1][0].axhline(TARGETS["loop_lag_p99_ms"], color="#e76f51", linewidth=1)
    for ax in axes[1]:
        ax.set_xlabel("minutes (grey: end of warm-up)")
    fig.suptitle(f"make soak, {result['date']} (scale {result['settings']['scale']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    cfg = settings()
    box = machine()
    workdir = Path(tempfile.mkdtemp(prefix="sanic-rt-soak-"))
    started = time.monotonic()
    try:
        result = Soak(cfg, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    result |= {
        "date": date,
        "settings": cfg,
        "machine": f"{box['cpu']}, {box['cores']} cores, {box['memory_gb']} GB, "
        f"Python {box['python']}, node {box['node']}, {box['redis_server'].split(' sha')[0]}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in box['load_average_at_start'])}, "
        f"at end {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "wall_seconds": time.monotonic() - started,
    }
    result["targets"] = targets(result)
    out = Path(os.environ.get("SOAK_OUT") or BENCH_DIR / "results")
    if cfg["scale"] != 1 and not os.environ.get("SOAK_OUT"):
        out = out / "scaled"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"soak-{date}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    chart(result, stem.with_suffix(".png"))
    print(markdown(result))
    print(f"written: {stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
