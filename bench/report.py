"""The report: headline ratios, targets met or missed, a markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SANIC_RT = ("sanic-rt-memory", "sanic-rt-redis")
BARE_SAME_MODE = "bare-asgi"  # sanic-rt's serving mode, and the fastest plain configuration
TOP_CLIENTS = 2000
TOP_STORM = 5000
C10K = 10_000
ISSUE8_FANOUT = 1000
FANOUT_10K = 10_000


def _find(rows: list[dict[str, Any]], server: str, **match: Any) -> dict[str, Any] | None:
    for row in rows or []:
        if row.get("server") == server and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """sanic-rt / bare and sanic-rt / Node, per second and per server CPU-second."""
    out: dict[str, Any] = {}
    pings = results.get("pings") or []
    for clients in sorted({r["nominal_clients"] for r in pings}):
        for metric in ("acks_per_server_cpu_s", "acks_per_s"):
            table = {}
            for mine in SANIC_RT:
                row = _find(pings, mine, nominal_clients=clients)
                if row is None:
                    continue
                for other in ("bare-asgi", "bare-sanic", "node"):
                    ref = _find(pings, other, nominal_clients=clients)
                    if ref is not None:
                        table[f"{mine} / {other}"] = _div(row[metric], ref[metric])
            bare, node = (_find(pings, s, nominal_clients=clients) for s in ("bare-asgi", "node"))
            if bare and node:
                table["bare-asgi / node"] = _div(bare[metric], node[metric])
            out[f"{metric}@{clients}"] = table
    storm = results.get("storm") or []
    for n in sorted({r["n"] for r in storm}):
        table = {}
        for mine in SANIC_RT:
            row = _find(storm, mine, n=n)
            for other in ("bare-asgi", "bare-sanic", "node"):
                ref = _find(storm, other, n=n)
                if row and ref:
                    table[f"{mine} / {other}"] = _div(
                        row["connects_per_server_cpu_s"], ref["connects_per_server_cpu_s"]
                    )
        out[f"connects_per_server_cpu_s@{n}"] = table
        redis, memory = _find(storm, "sanic-rt-redis", n=n), _find(storm, "sanic-rt-memory", n=n)
        if redis and memory:
            out[f"connects_per_s@{n}"] = {
                "sanic-rt-redis / sanic-rt-memory": _div(
                    redis["connects_per_s"], memory["connects_per_s"]
                )
            }
    c10k = results.get("c10k") or []
    if c10k:
        table = {}
        node = _find(c10k, "node")
        for mine in SANIC_RT:
            row = _find(c10k, mine)
            if row is None:
                continue
            if node:
                table[f"{mine} / node"] = _div(
                    row["acks_per_server_cpu_s"], node["acks_per_server_cpu_s"]
                )
            at_2000 = _find(pings, mine, nominal_clients=TOP_CLIENTS)
            if at_2000:
                table[f"{mine} @{C10K} / @{TOP_CLIENTS}"] = _div(
                    row["acks_per_server_cpu_s"], at_2000["acks_per_server_cpu_s"]
                )
        out[f"c10k_acks_per_server_cpu_s@{C10K}"] = table
    return out


def _top(rows: list[dict[str, Any]], key: str) -> Any:
    values = sorted({r[key] for r in rows or []})
    return values[-1] if values else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target from issue 8 with the measured value; None where it was not measured."""
    found: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher_is_better: bool = True) -> None:
        met = None
        if value is not None:
            met = value >= goal if higher_is_better else value <= goal
        op = ">=" if higher_is_better else "<="
        found.append({"target": name, "goal": f"{op} {goal:g}", "value": value, "met": met})

    pings = results.get("pings") or []
    top = _top(pings, "nominal_clients")
    r = (results.get("ratios") or {}).get(f"acks_per_server_cpu_s@{top}", {})
    for mine in SANIC_RT:
        label = mine.removeprefix("sanic-rt-")
        add(
            f"acks/server CPU-s @{top} clients, sanic-rt ({label}) / bare, same serving mode",
            r.get(f"{mine} / bare-asgi"),
            0.9,
        )
        add(
            f"acks/server CPU-s @{top} clients, sanic-rt ({label}) / fastest bare "
            "(ASGI, deflate off)",
            r.get(f"{mine} / bare-asgi"),
            1.0,
        )
        add(
            f"acks/server CPU-s @{top}, sanic-rt ({label}) / Node (stretch)",
            r.get(f"{mine} / node"),
            0.5,
        )
    storm = results.get("storm") or []
    n = _top(storm, "n")
    for mine in SANIC_RT:
        row = _find(storm, mine, n=n)
        if row:
            label = mine.removeprefix("sanic-rt-")
            add(
                f"RSS KB per idle connection, sanic-rt ({label}), N={n}",
                row["rss_per_conn_kb"],
                40,
                False,
            )
    for row in results.get("fanout") or []:
        if row.get("nominal_subscribers", ISSUE8_FANOUT) != ISSUE8_FANOUT:
            continue  # issue 17's 10,000 subscribers have their own target
        label = row["server"].removeprefix("sanic-rt-")
        subs = row["subscribers"]
        add(
            f"fan-out p99 ms, connect -> {subs} subscribers ({label})",
            row["online_p99_ms"],
            100,
            False,
        )
        add(
            f"fan-out p99 ms, end of grace -> {subs} subscribers ({label})",
            row["offline_p99_ms"],
            100,
            False,
        )
    redis = ((results.get("backends") or {}).get("backends") or {}).get("redis")
    if redis:
        add(
            "Redis heartbeat / PING floor @ concurrency 64",
            redis["heartbeat@64"].get("ratio_to_floor"),
            0.5,
        )
    return found


def latest_soak(dirs: list[Path]) -> dict[str, Any] | None:
    """The soak rows of issue 17's table from the newest ``soak-*.json`` in ``dirs``.

    ``bench/soak.py`` (``make soak``) writes that file; the bench only reads the keys it
    needs, each optional, so that a soak result of another shape shows as "-", not an error.
    """
    found = {p for d in dirs for p in Path(d).glob("soak-*.json")}
    if not found:
        return None
    path = max(found, key=lambda p: (p.stem, p.stat().st_mtime))
    try:
        soak = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"file": str(path), "error": f"{type(err).__name__}: {err}"}
    stats = soak.get("presence_stats_after_grace") or {}
    cfg = soak.get("settings") or {}
    return {
        "file": str(path),
        "date": soak.get("date"),
        "scale": cfg.get("scale"),
        "clients": cfg.get("clients"),
        "seconds": cfg.get("seconds"),
        "rss_slope_mb_per_min": soak.get("rss_slope_mb_per_min"),
        "loop_lag_p99_ms": soak.get("loop_lag_p99_ms"),
        "stats_equal": stats.get("equal"),
        "online_users": stats.get("online_users"),
        "connections": stats.get("connections"),
        "connected_at_end": soak.get("connected_at_end"),
    }


def targets_issue17(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets: the issue's "now", the goal, this run's value, met or not.

    ``value`` is the number the goal applies to; ``detail`` the figures it comes from.
    """
    found: list[dict[str, Any]] = []

    def add(
        name: str,
        now: str,
        value: float | bool | None,
        goal: float | None,
        higher_is_better: bool = True,
        detail: str = "",
    ) -> None:
        met = None
        if isinstance(value, bool):
            met, shown = value, "equal" if value else "not equal"
            found.append(
                {"target": name, "now": now, "goal": "equal", "value": shown, "met": met}
                | {"detail": detail, "headroom": None}
            )
            return
        headroom = None
        if value is not None and goal is not None:
            met = value >= goal if higher_is_better else value <= goal
            headroom = value / goal if higher_is_better else (goal / value if value else None)
        op = ">=" if higher_is_better else "<="
        found.append(
            {
                "target": name,
                "now": now,
                "goal": f"{op} {goal:g}" if goal is not None else "-",
                "value": value,
                "met": met,
                "detail": detail,
                "headroom": headroom,
            }
        )

    r = results.get("ratios") or {}
    pings = results.get("pings") or []
    at_2000 = r.get(f"acks_per_server_cpu_s@{TOP_CLIENTS}", {})
    node_2000 = _find(pings, "node", nominal_clients=TOP_CLIENTS)
    for mine, now, goal in (
        ("sanic-rt-memory", "0.21-0.22", 0.35),
        ("sanic-rt-redis", "0.20-0.21", 0.30),
    ):
        row = _find(pings, mine, nominal_clients=TOP_CLIENTS)
        label = mine.removeprefix("sanic-rt-")
        add(
            f"acks per server CPU-s @{TOP_CLIENTS:,}, sanic-rt {label} / Node",
            now,
            at_2000.get(f"{mine} / node"),
            goal,
            detail=_per_cpu_detail(row, node_2000),
        )
    c10k = results.get("c10k") or []
    at_10k = r.get(f"c10k_acks_per_server_cpu_s@{C10K}", {})
    n10k = _find(c10k, "node")
    for mine in SANIC_RT:
        row = _find(c10k, mine)
        if mine == "sanic-rt-redis" and row is None:
            continue  # optional in the issue; the memory row always shows, measured or not
        label = mine.removeprefix("sanic-rt-")
        at2 = _find(pings, mine, nominal_clients=TOP_CLIENTS)
        add(
            f"acks per server CPU-s @{C10K:,} / the same @{TOP_CLIENTS:,}, sanic-rt {label}",
            "0.68" if label == "memory" else "-",
            at_10k.get(f"{mine} @{C10K} / @{TOP_CLIENTS}"),
            0.9,
            detail=_per_cpu_detail(row, at2, f"@{TOP_CLIENTS:,}"),
        )
    for mine in SANIC_RT:
        row = _find(c10k, mine)
        if mine == "sanic-rt-redis" and row is None:
            continue
        label = mine.removeprefix("sanic-rt-")
        add(
            f"acks per server CPU-s @{C10K:,}, sanic-rt {label} / Node",
            "0.15" if label == "memory" else "-",
            at_10k.get(f"{mine} / node"),
            0.3,
            detail=_per_cpu_detail(row, n10k),
        )
    mem10k = _find(c10k, "sanic-rt-memory")
    node_kb = n10k.get("rss_per_conn_kb") if n10k else None
    add(
        f"RSS per idle authenticated connection @{C10K:,}, sanic-rt memory (KB)",
        "38.4 KB (Node 15.4)",
        mem10k.get("rss_per_conn_kb") if mem10k else None,
        30,
        higher_is_better=False,
        detail=f"Node {_fmt(node_kb, 1)} KB" if node_kb is not None else "",
    )
    storm = results.get("storm") or []
    for n in sorted({row["n"] for row in storm}):
        redis, memory = _find(storm, "sanic-rt-redis", n=n), _find(storm, "sanic-rt-memory", n=n)
        detail = ""
        if redis and memory:
            detail = (
                f"Redis {_fmt(redis['connects_per_s'])}/s, memory "
                f"{_fmt(memory['connects_per_s'])}/s"
            )
        nominal = (memory or redis or {}).get("nominal_n", n)
        add(
            f"connects/s, {nominal:,} clients, Redis / memory",
            "0.41-0.79",
            (r.get(f"connects_per_s@{n}") or {}).get("sanic-rt-redis / sanic-rt-memory"),
            0.9,
            detail=detail,
        )
    soak = results.get("soak") or {}
    where = ""
    if soak.get("file"):
        where = (
            f"`{Path(soak['file']).name}`"
            + (f", scale {soak['scale']}" if soak.get("scale") not in (None, 1, 1.0) else "")
            + (f", {soak['clients']:,.0f} clients" if soak.get("clients") else "")
        )
    missing = "no soak-*.json: run `make soak`" if not soak else ""
    add(
        "soak: RSS slope after warm-up (MB/min)",
        "-",
        soak.get("rss_slope_mb_per_min"),
        1,
        higher_is_better=False,
        detail=where or missing,
    )
    equal = soak.get("stats_equal")
    counts = ""
    if soak.get("connected_at_end") is not None:
        counts = (
            f"{soak.get('online_users')} users / {soak.get('connections')} connections vs "
            f"{soak['connected_at_end']} clients; "
        )
    if equal is None:
        found.append(
            {"target": "soak: presence stats vs connected clients at the end", "now": "-"}
            | {"goal": "equal", "value": None, "met": None, "detail": counts + (where or missing)}
            | {"headroom": None}
        )
    else:
        add(
            "soak: presence stats vs connected clients at the end",
            "-",
            bool(equal),
            None,
            detail=counts + where,
        )
    add(
        "soak: event-loop lag p99 (ms)",
        "-",
        soak.get("loop_lag_p99_ms"),
        50,
        higher_is_better=False,
        detail=where or missing,
    )
    fan = [
        row for row in results.get("fanout") or [] if row.get("nominal_subscribers") == FANOUT_10K
    ]
    for mine in SANIC_RT:
        row = _find(fan, mine)
        if mine == "sanic-rt-redis" and row is None:
            continue
        label = mine.removeprefix("sanic-rt-")
        for key, what in (("online_p99_ms", "connect"), ("offline_p99_ms", "end of grace")):
            detail = ""
            if row:
                detail = f"{row['subscribers']:,} subscribers, {row['rounds']} rounds"
                detail += f", {row['missing']} missing" if row.get("missing") else ""
            add(
                f"presence fan-out to {FANOUT_10K:,} subscribers, p99 ms ({what}, {label})",
                "-",
                row.get(key) if row else None,
                500,
                higher_is_better=False,
                detail=detail,
            )
    return found


def _per_cpu_detail(
    row: dict[str, Any] | None, ref: dict[str, Any] | None, ref_name: str = ""
) -> str:
    """'5,444 vs 13,836 acks/CPU-s (node)' from two ping rows; load CPU where it saturated."""
    if not row or not ref:
        return ""
    name = ref_name or ref["server"].removeprefix("sanic-rt-")
    text = (
        f"{_fmt(row['acks_per_server_cpu_s'])} vs {_fmt(ref['acks_per_server_cpu_s'])} "
        f"({name}) acks/CPU-s"
    )
    for r in (row, ref):
        if (r.get("load_cpu_share") or 0) > 0.9:
            text += f"; load generator at {r['load_cpu_share']:.0%} with {r['server']}"
    return text


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def metrics_cost(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Summed acks over summed server CPU, metrics off vs on; cost in percent."""

    def per_cpu(runs: list[dict[str, Any]]) -> float | None:
        cpu = sum(r["server_cpu_s"] for r in runs)
        return sum(r["acks"] for r in runs) / cpu if cpu > 0 else None

    off, on = per_cpu(rows["off"]), per_cpu(rows["on"])
    cost = (1 - on / off) * 100 if off and on else None
    return {
        "clients": rows["on"][0]["clients"] if rows["on"] else None,
        "rounds": len(rows["on"]),
        "acks_per_server_cpu_s_off": off,
        "acks_per_server_cpu_s_on": on,
        "cost_percent": cost,
        "target_percent": 5.0,
        "runs": rows,
    }


def _metrics_section(m: dict[str, Any]) -> str:
    text = (
        "## Metrics cost\n\nAcked pings, back to back, against sanic-rt (memory backend) "
        f"with `[metrics] enabled` off and on, {m['rounds']} interleaved rounds of "
        f"{m['clients']} clients each; acks summed over server CPU-seconds summed.\n"
    )
    rows = [
        ["off", m["acks_per_server_cpu_s_off"]],
        ["on", m["acks_per_server_cpu_s_on"]],
        ["cost %", m["cost_percent"]],
    ]
    return text + _table(["metrics", "acks/server CPU-s"], rows)


def markdown(results: dict[str, Any], chart_name: str) -> str:
    m = results["machine"]
    out = [f"# sanic-rt benchmark, {results['date']}\n"]
    out.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"Python {m['python']}, node {m['node']}. Server pinned to CPU "
        f"{results['pinning']['server_cpus']}, load generator to {results['pinning']['load_cpus']}."
        f" Scale {results['scale']}; wall time {results.get('wall_seconds')} s; load average "
        f"{_fmt(m['load_average_at_start'][0])} at start, {_fmt(m['load_average_at_end'][0])} at "
        "end (a shared machine: ratios measured side by side are what to compare).\n"
    )
    out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".\n")
    out.append(f"![headline ratios]({chart_name})\n")
    out.append("## Targets (issue 8)\n")
    rows = [[t["target"], t["goal"], t["value"], t["met"]] for t in targets(results)]
    out.append(_table(["target", "goal", "measured", "met"], rows))
    out.append(
        '## Targets (issue 17)\n\nMeasured in this run, side by side; "now" is the issue\'s '
        "own measurement before its changes. The soak rows are read from the newest "
        "`make soak` result (`bench/results/soak-*.json`), a separate run.\n"
    )
    if results.get("scale") != 1:
        out.append(
            f"Scale {results['scale']}: the labels give the full run's client counts; this "
            f"run used {results['scale']} of them (the tables below have the real counts), "
            "so its values do not answer the targets.\n"
        )
    rows = []
    for t in targets_issue17(results):
        measured = _fmt(t["value"])
        if t["detail"]:
            measured += f" ({t['detail']})"
        rows.append([t["target"], t["now"], t["goal"], measured, t["met"]])
    out.append(_table(["target", "now", "target", "measured", "met"], rows))
    if results.get("c10k"):
        out.append(
            f"## (2b) {C10K:,} clients: connect, idle, then acked pings\n\nOne connect of "
            "all clients per server (100 handshakes in flight), RSS growth once it has "
            "settled with every client idle, then back-to-back pings as in (2). "
            "load CPU: the node load generator's share of its core during the pings.\n"
        )
        rows = [
            [
                r["server"],
                r["clients"],
                r.get("connects_per_s"),
                r.get("rss_per_conn_kb"),
                r["acks_per_s"],
                r["acks_per_server_cpu_s"],
                r["server_cpu_share"],
                r["load_cpu_share"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"] + r["timeouts"],
            ]
            for r in results["c10k"]
        ]
        headers = ["server", "clients", "connects/s", "RSS KB/conn", "acks/s"]
        headers += ["acks/server CPU-s", "server CPU", "load CPU", "p50 ms", "p99 ms", "errors"]
        out.append(_table(headers, rows))
    if results.get("ratios"):
        out.append("## Ratios\n")
        rows = []
        for metric, table in results["ratios"].items():
            rows += [[metric, pair, value] for pair, value in table.items()]
        out.append(_table(["metric", "servers", "ratio"], rows))
    if results.get("metrics"):
        out.append(_metrics_section(results["metrics"]))
    if results.get("pings"):
        out.append(
            "## (2) Acked pings, back to back\n\n`bare-asgi` is bare python-socketio in "
            "sanic-rt's own serving mode (ASGI under uvicorn, websockets-sansio, "
            "permessage-deflate off), which is also the fastest plain configuration; "
            '`bare-sanic` is `AsyncServer(async_mode="sanic")` for reference.\n'
        )
        rows = [
            [
                r["server"],
                r["clients"],
                r["acks_per_s"],
                r["acks_per_server_cpu_s"],
                r["server_cpu_share"],
                r["load_cpu_share"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"] + r["timeouts"],
            ]
            for r in results["pings"]
        ]
        out.append(
            _table(
                [
                    "server",
                    "clients",
                    "acks/s",
                    "acks/server CPU-s",
                    "server CPU",
                    "load CPU",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                ],
                rows,
            )
        )
    if results.get("storm"):
        out.append("## (1) Connection storm to /chats\n")
        rows = [
            [
                r["server"],
                r["n"],
                r["connected"],
                r["connects_per_s"],
                r["connects_per_server_cpu_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["rss_per_conn_kb"],
            ]
            for r in results["storm"]
        ]
        out.append(
            _table(
                [
                    "server",
                    "N",
                    "connected",
                    "connects/s",
                    "connects/server CPU-s",
                    "p50 ms",
                    "p99 ms",
                    "RSS KB/conn",
                ],
                rows,
            )
        )
    if results.get("fanout"):
        out.append(
            "## (3) Presence fan-out\n\nFrom a user's first connect, and from the end of its "
            "offline grace, to `presence:update` at every subscriber. CPU seconds of the "
            "server and of the load generator over all rounds: the latency includes the "
            "generator decoding every subscriber's update.\n"
        )
        rows = [
            [
                r["server"],
                r["subscribers"],
                r["rounds"],
                r["online_p50_ms"],
                r["online_p99_ms"],
                r["offline_p50_ms"],
                r["offline_p99_ms"],
                r["missing"],
                r.get("server_cpu_s"),
                r.get("load_cpu_s"),
            ]
            for r in results["fanout"]
        ]
        out.append(
            _table(
                [
                    "server",
                    "subscribers",
                    "rounds",
                    "connect p50 ms",
                    "connect p99 ms",
                    "grace end p50 ms",
                    "grace end p99 ms",
                    "missing",
                    "server CPU s",
                    "load CPU s",
                ],
                rows,
            )
        )
    bk = results.get("backends") or {}
    if bk.get("backends"):
        out.append(
            "## (4) Backends through the Presence API, in-process\n\nops/s, and the ratio "
            "to the client library's own floor against the same server (redis PING, "
            "memcached get of one key). (6) Loop lag: sleep drift of a 5 ms sampler during "
            "each measurement; the memory backend never suspends, so at concurrency 64 its "
            "lag is the loop saturated by CPU work (workers yield every 16 ops), not "
            "blocking.\n"
        )
        rows = []
        for name, ops in bk["backends"].items():
            for key, r in ops.items():
                ratio = r.get("ratio_to_floor")
                rows.append([name, key, r["ops_per_s"], ratio, r["lag_p99_ms"], r["lag_max_ms"]])
        out.append(
            _table(
                [
                    "backend",
                    "op@concurrency",
                    "ops/s",
                    "/ floor",
                    "(6) loop lag p99 ms",
                    "loop lag max ms",
                ],
                rows,
            )
        )
    for name, why in (bk.get("skipped") or {}).items():
        out.append(f"- backend **{name}** skipped: {why}\n")
    cl = results.get("cluster")
    if cl:
        out.append("## (5) Two nodes, Redis manager\n")
        if "skipped" in cl:
            out.append(f"Skipped: {cl['skipped']}\n")
        else:
            out.append(
                _table(
                    ["measured", "samples", "p50 ms", "p99 ms", "missing"],
                    [[cl["mode"], cl["samples"], cl["p50_ms"], cl["p99_ms"], cl["missing"]]],
                )
            )
    out += _bus_markdown(results.get("bus"))
    ev = results.get("events")
    if ev:
        out.append(
            "## (8) Presence events: transitions/s with webhooks off and on\n\nconnect+"
            "disconnect pairs of new users at concurrency 64, no offline grace (2 changes "
            "each), in-process; with webhooks on, every change is POSTed to a receiver in "
            "another process. drain: time after the load until the receiver had them all.\n"
        )
        rows = [
            [
                name,
                r["transitions_per_s"],
                r.get("drain_s"),
                r.get("delivered_per_s"),
                r["lag_p99_ms"],
            ]
            for name, r in ev.items()
        ]
        out.append(
            _table(
                ["backend, webhooks", "transitions/s", "drain s", "delivered/s", "lag p99 ms"],
                rows,
            )
        )
    topo = results.get("topologies")
    if topo:
        out.append(topology_table(topo))
    if results.get("notes"):
        out.append("## Notes\n")
        out += [f"- {n}\n" for n in results["notes"]]
    if results.get("errors"):
        out.append("## Sections that failed\n")
        out += [f"- {k}: {v}\n" for k, v in results["errors"].items()]
    return "\n".join(out)


def _bus_markdown(bus: dict[str, Any] | None) -> list[str]:
    if not bus:
        return []
    out = ["## (7) Cluster bus: pub/sub (`redis`) against streams (`redis-streams`)\n"]
    if "skipped" in bus:
        return [*out, f"Skipped: {bus['skipped']}\n"]
    rows = [
        [
            r["manager"],
            r.get("routing", "broadcast"),
            "on" if r["recovery"] else "off",
            r["samples"],
            r["p50_ms"],
            r["p99_ms"],
            r["acks_per_s"],
            r["acks_per_cpu_s"],
            f"{r['burst_received']}/{r['burst_acked']}",
            r.get("bus_reads_per_emit"),
        ]
        for r in bus["cross_node"]
    ]
    headers = ["manager", "routing", "recovery", "samples", "p50 ms", "p99 ms", "burst acks/s"]
    headers += ["acks/CPU-s (A+B)", "received/acked", "bus reads per emit (3 nodes)"]
    out.append(_table(headers, rows))
    rows = [
        [
            r["manager"],
            r["messages"],
            r["discarded_per_cpu_s"] or f"cut off by Redis {r['subscriber_cut_off']}x",
            r.get("bytes_per_entry", "-"),
            r.get("entry_json_bytes", "-"),
        ]
        for r in bus["ceiling"]
    ]
    headers = ["manager", "flood", "emits for others / CPU-s", "Redis B/entry", "JSON B"]
    out.append(_table(headers, rows))
    return out


def topology_table(topo: dict[str, Any]) -> str:
    """The Redis backend per topology: heartbeat and bulk rates, memory per online user."""
    names = [n for n in ("single", "sentinel", "cluster") if n in topo]
    keys = ["heartbeat@1", "heartbeat@64", "bulk_100@1", "bulk_100@64"]
    rows = [
        [
            n,
            *(topo[n]["ops"][k]["ops_per_s"] for k in keys),
            topo[n]["memory_bytes_per_online_user"],
        ]
        for n in names
    ]
    head = (
        "## Redis topologies (ops/s through the Presence API; memory per online user, "
        f"{topo['memory_users']} users with one connection)\n"
    )
    return head + _table(["topology", *keys, "B per online user"], rows)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float | None]] = []
    r = results.get("ratios") or {}
    for metric in sorted(k for k in r if k.startswith("acks_per_server_cpu_s@")):
        clients = metric.split("@")[1]
        for pair, goal in (
            ("sanic-rt-memory / bare-asgi", 1.0),
            ("sanic-rt-redis / bare-asgi", 1.0),
            ("sanic-rt-memory / bare-sanic", None),
            ("sanic-rt-memory / node", 0.5),
            ("bare-asgi / node", None),
        ):
            if r[metric].get(pair) is not None:
                bars.append((f"acks/CPU-s @{clients}: {pair}", r[metric][pair], goal))
    redis = ((results.get("backends") or {}).get("backends") or {}).get("redis")
    if redis and redis["heartbeat@64"].get("ratio_to_floor") is not None:
        bars.append(("redis heartbeat / PING @64", redis["heartbeat@64"]["ratio_to_floor"], 0.5))
    mc = ((results.get("backends") or {}).get("backends") or {}).get("memcached")
    if mc and mc["heartbeat@64"].get("ratio_to_floor") is not None:
        bars.append(("memcached heartbeat / get @64", mc["heartbeat@64"]["ratio_to_floor"], None))
    issue17 = [
        (t["target"], t["headroom"]) for t in targets_issue17(results) if t["headroom"] is not None
    ]
    height = 0.45 * (max(4, len(bars)) + max(2, len(issue17))) + 2.0
    fig, (ax, ax17) = plt.subplots(
        2,
        1,
        figsize=(10, height),
        gridspec_kw={"height_ratios": [max(4, len(bars)), max(2, len(issue17))]},
    )
    _issue17_panel(ax17, issue17)
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    colors = [
        "#999999" if goal is None else ("#2a9d8f" if value >= goal else "#e76f51")
        for _, value, goal in bars
    ]
    ax.barh(range(len(bars)), values, color=colors)
    for i, (_, value, goal) in enumerate(bars):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=8)
        if goal is not None:
            ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.set_yticks(range(len(bars)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="#cccccc", linewidth=1, zorder=0)
    ax.set_xlabel("ratio (black tick: target; green met, red missed, grey no target)")
    ax.set_title(
        f"sanic-rt headline ratios (issue 8), {results['date']} (scale {results['scale']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _issue17_panel(ax: Any, rows: list[tuple[str, float]]) -> None:
    """Issue 17's targets as measured / goal (goal / measured where lower is better)."""
    if not rows:
        ax.text(0.5, 0.5, "issue 17: nothing measured in this run", ha="center", va="center")
        ax.set_axis_off()
        return
    values = [v for _, v in rows]
    ax.barh(range(len(rows)), values, color=["#2a9d8f" if v >= 1 else "#e76f51" for v in values])
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=1.5)
    ax.set_xlabel("issue 17: measured against target (1 = the target; right of it is met)")
    ax.set_title("Targets (issue 17)", fontsize=10)


def write(results: dict[str, Any], json_path: Path, soak_dirs: list[Path]) -> tuple[Path, Path]:
    """Write a run's JSON, markdown and PNG side by side, with the newest soak's rows."""
    results["soak"] = latest_soak(soak_dirs)
    results["ratios"] = ratios(results)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path, png_path = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    chart(results, png_path)
    md_path.write_text(markdown(results, png_path.name))
    return md_path, png_path


if __name__ == "__main__":
    # Render a run again, e.g. once `make soak` has written the soak rows it reads:
    #   python -m bench.report bench/results/<date>.json
    import sys

    path = Path(sys.argv[1])
    write(json.loads(path.read_text()), path, [path.parent])
    print(f"rendered {path.with_suffix('.md')}, {path.with_suffix('.png')}")
