"""Section "bus": the cluster bus, pub/sub (``redis``) against streams (``redis-streams``).

- cross-node ``chat:message`` latency (sender on node B, receiver on node A, one at a
  time), then a burst with 32 in flight: acks per second and per CPU-second of the two
  nodes; for pub/sub, streams, and streams with recovery on (the receiver opting in);
- one node's CPU on bus traffic meant for others, and so its ceiling: a node with no
  clients is flooded with emits for a room it does not hold, straight into the bus:
  messages it discards per CPU-second;
- Redis memory per stream entry at the flood's size (MEMORY USAGE / XLEN).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from .procs import Proc, free_port
from .sockets import Context, load_proc, sanic_rt_target, server_url

CHANNEL = "sanic_rt"
FLOOD_BATCH = 1000
#: the throughput burst after the latency loop: this many messages per latency sample,
#: with this many acked sends in flight
BURST_PER_MESSAGE = 10
BURST_IN_FLIGHT = 32
#: a chat:message emit as python-socketio's pub/sub managers put it on the bus
SAMPLE_MESSAGE = {
    "method": "emit",
    "event": "chat:message",
    "data": [
        {
            "id": "0" * 32,
            "conversation_id": "conv-elsewhere",
            "sender_id": "someone",
            "text": "a chat message of an ordinary length, about eighty characters long...",
            "sent_at": 1_700_000_000.0,
            "client_id": None,
        }
    ],
    "binary": False,
    "namespace": "/chats",
    "room": "conv:conv-elsewhere",
    "skip_sid": "x" * 20,
    "callback": None,
    "host_id": "f" * 32,
}


def node(
    ctx: Context, redis_port: int, manager: str, recovery: bool, routing: str = "broadcast"
) -> Proc:
    url = f"redis://127.0.0.1:{redis_port}/0"
    cluster = {"manager": manager} | ({"routing": routing} if routing != "broadcast" else {})
    sections: dict[str, Any] = {
        "presence": {"backend": "redis", "redis": {"url": url}},
        "cluster": cluster,
    }
    if recovery:
        sections["recovery"] = {"enabled": True}
    name = f"bus-{manager}-{routing}{'-recovery' if recovery else ''}"
    return sanic_rt_target(ctx, name, **sections).make(free_port())


def flush(redis_port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        client.flushall()
    finally:
        client.close()


def settle(proc: Proc, quiet: float = 0.05, step: float = 0.5, limit: float = 60.0) -> float:
    """Wait until ``proc`` is idle (under ``quiet`` CPU-s per ``step``); its CPU seconds then."""
    deadline = time.monotonic() + limit
    last = proc.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(step)
        now = proc.cpu_seconds()
        if now - last < quiet:
            return now
        last = now
    return last


def idle_rate(proc: Proc, seconds: float = 1.0) -> float:
    """CPU seconds per second ``proc`` spends with nothing to do (its timers)."""
    start = proc.cpu_seconds()
    time.sleep(seconds)  # a measurement window, not a wait for state
    return (proc.cpu_seconds() - start) / seconds


def bus_reads(redis_port: int, nodes: int) -> int:
    """Entries the nodes have read off the bus so far: each node reads the one stream
    with broadcast routing, its own stream with targeted routing."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        shared = client.xlen(f"{CHANNEL}:bus") if client.exists(f"{CHANNEL}:bus") else 0
        own = sum(int(client.xlen(k)) for k in client.keys(f"{CHANNEL}:bus:node:*"))
        return int(shared) * nodes + own
    finally:
        client.close()


def cross_node_row(
    ctx: Context,
    redis_port: int,
    manager: str,
    recovery: bool,
    messages: int,
    routing: str = "broadcast",
) -> dict[str, Any]:
    flush(redis_port)
    # a receives, b sends, c has no clients: what c reads is traffic meant for others
    a, b, c = (node(ctx, redis_port, manager, recovery, routing) for _ in range(3))
    load = None
    try:
        for proc in (a, b, c):
            proc.start()
        opts = {
            "mode": "crossNode",
            "recover": recovery,
            "urlA": server_url(a.port or 0),
            "urlB": server_url(b.port or 0),
            "prefix": "bus-",
            "messages": messages,
            "burst": BURST_PER_MESSAGE * messages,
            "inFlight": BURST_IN_FLIGHT,
            "roundTimeoutMs": 5000,
            "maxSeconds": 60 + messages * 5,
        }
        load = load_proc(ctx, f"load-bus-{manager}", opts).start(capture=True)
        latency = load.expect("result", opts["maxSeconds"])
        load.expect("burst_start", 30)
        before = a.cpu_seconds() + b.cpu_seconds()
        reads_before = bus_reads(redis_port, 3) if manager != "redis" else 0
        burst = load.expect("burst_done", opts["maxSeconds"])
        used = a.cpu_seconds() + b.cpu_seconds() - before
        reads = bus_reads(redis_port, 3) - reads_before if manager != "redis" else None
        load.expect("done", 30)
    finally:
        if load is not None:
            load.stop()
        for proc in (a, b, c):
            proc.stop()
    return {
        "manager": manager,
        "routing": routing,
        "recovery": recovery,
        "mode": latency.get("mode"),
        "samples": latency.get("samples"),
        "missing": latency.get("missing"),
        "p50_ms": latency.get("p50_ms"),
        "p99_ms": latency.get("p99_ms"),
        "burst_acked": burst["acked"],
        "burst_received": burst["received"],
        "acks_per_s": round(burst["acked"] / burst["seconds"]) if burst["seconds"] else None,
        "acks_per_cpu_s": round(burst["acked"] / used) if used else None,
        # pub/sub: every node receives every message (3 per emit), not countable in Redis
        "bus_reads_per_emit": round(reads / burst["acked"], 2)
        if reads is not None and burst["acked"]
        else 3.0,
    }


def publish_flood(client: redis.Redis, manager: str, count: int, maxlen: int) -> None:
    payload = json.dumps(SAMPLE_MESSAGE)
    for start in range(0, count, FLOOD_BATCH):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(FLOOD_BATCH, count - start)):
            if manager == "redis":
                pipe.publish(CHANNEL, payload)
            else:
                pipe.xadd(f"{CHANNEL}:bus", {"m": payload}, maxlen=maxlen, approximate=True)
        pipe.execute()


def ceiling_row(ctx: Context, redis_port: int, manager: str, count: int) -> dict[str, Any]:
    """Emits for a room the node does not hold: how many it discards per CPU-second."""
    flush(redis_port)
    proc = node(ctx, redis_port, manager, recovery=False)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        proc.start()
        settle(proc)
        idle = idle_rate(proc)
        dropped_before = _output_buffer_disconnections(client)
        before = proc.cpu_seconds()
        started = time.monotonic()
        publish_flood(client, manager, count, maxlen=max(count, 10_000))
        after = settle(proc)
        seconds = time.monotonic() - started
        memory = stream_memory(client) if manager != "redis" else {}
        # A pub/sub subscriber that falls behind is cut off by Redis (client-output-
        # buffer-limit pubsub) and what was queued for it is lost: then the node did
        # less than the flood's work, and the rate is not a ceiling.
        dropped = _output_buffer_disconnections(client) - dropped_before
    finally:
        proc.stop()
        client.close()
    spent = max(1e-6, after - before - idle * seconds)
    return {
        "manager": manager,
        "messages": count,
        "node_cpu_s": round(after - before, 3),
        "discarded_per_cpu_s": round(count / spent) if not dropped else None,
        "subscriber_cut_off": dropped,
        **memory,
    }


def _output_buffer_disconnections(client: redis.Redis) -> int:
    stats: Any = client.info("stats")
    return int(stats.get("client_output_buffer_limit_disconnections", 0))


def stream_memory(client: redis.Redis) -> dict[str, Any]:
    key = f"{CHANNEL}:bus"
    length = client.xlen(key)
    usage = client.memory_usage(key, samples=0) or 0
    return {
        "stream_entries": length,
        "stream_bytes": usage,
        "bytes_per_entry": round(usage / length) if length else None,
        "entry_json_bytes": len(json.dumps(SAMPLE_MESSAGE)),
    }


def run(ctx: Context, redis_port: int, messages: int, flood: int) -> dict[str, Any]:
    rows = []
    variants = [
        ("redis", False, "broadcast"),
        ("redis-streams", False, "broadcast"),
        ("redis-streams", True, "broadcast"),
        ("redis-streams", False, "targeted"),
    ]
    for manager, recovery, routing in variants:
        print(f"   bus cross-node {manager} {routing} recovery={recovery}", flush=True)
        rows.append(cross_node_row(ctx, redis_port, manager, recovery, messages, routing))
    ceilings = []
    for manager in ("redis", "redis-streams"):
        print(f"   bus ceiling {manager} flood={flood}", flush=True)
        ceilings.append(ceiling_row(ctx, redis_port, manager, flood))
    return {"cross_node": rows, "ceiling": ceilings}
