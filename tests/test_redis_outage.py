"""Redis killed and started again under a running server with connected clients."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from sanic_rt.logs import OncePerInterval
from tests.support.clients import eventually, http, make_token
from tests.support.cluster import TTL, cluster_config, record_after_outage, updates_for, wire_up
from tests.support.procs import Proc, redis_process


async def ready_status(node: Proc, expected: int | None = None) -> int | bool:
    status, _body = await http("GET", node.url + "/ready")
    return status if expected is None else status == expected


async def test_redis_restart_under_connected_clients(redis_proc, start_server, clients):
    node = start_server(cluster_config(redis_proc))
    bob = await clients(node.url, make_token("bob"))
    assert (await bob.call("presence:subscribe", {"user_ids": ["alice"]}))["ok"]
    alice = await clients(node.url, make_token("alice"), namespaces=["/chats", "/orders"])
    await eventually(lambda: updates_for(bob, "alice"))
    assert await ready_status(node) == 200

    redis_proc.kill()

    async def ready_is(code: int) -> bool:
        return await ready_status(node) == code

    await eventually(lambda: ready_is(503))
    # Presence calls fail fast with `unavailable`; the connections stay up.
    started = time.monotonic()
    for _ in range(20):
        ack = await alice.call("ping", {})
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    query = await bob.call("presence:query", {"user_ids": ["alice"]})
    assert query["error"]["code"] == "unavailable"
    assert time.monotonic() - started < 5  # 21 calls: no waiting on a dead Redis
    status, body = await http("GET", f"{node.url}/api/v1/presence/alice")
    assert status == 503 and body["error"]["code"] == "unavailable"
    # Emits through the bus fail meanwhile: `unavailable`, delivered nowhere (not
    # even to bob on this node), so that a retry cannot duplicate them.
    for client in (alice, bob):
        assert (await client.call("chat:join", {"conversation_id": "c"}))["ok"]
    for i in range(20):
        ack = await alice.call("chat:message", {"conversation_id": "c", "text": f"m{i}"})
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    # A client connecting during the outage is accepted and registered on recovery.
    carol = await clients(node.url, make_token("carol"))
    assert alice.sio.connected and bob.sio.connected and carol.sio.connected

    redis_proc.start()  # same port, empty: everything presence knew is gone
    recovered = time.monotonic()
    await eventually(lambda: ready_is(200), timeout=10)

    async def online_with(user_id: str, connections: int) -> bool:
        record = await record_after_outage(node, user_id)
        return record is not None and record["online"] and record["connections"] == connections

    # The periodic refresh (every ttl/3) re-registers every live connection.
    for user_id, connections in (("alice", 2), ("bob", 1), ("carol", 1)):
        await eventually(lambda u=user_id, n=connections: online_with(u, n), timeout=TTL)
    assert time.monotonic() - recovered <= TTL / 3 + 2
    assert (await alice.call("ping", {}))["data"] == {"status": "online"}
    status, body = await http("GET", f"{node.url}/api/v1/presence/stats")
    assert body["data"]["online_users"] == 3 and body["data"]["connections"] == 4

    # The bus is back: a message goes through, and is the only one bob ever got.
    ack = await alice.call("chat:message", {"conversation_id": "c", "text": "back"})
    assert ack["ok"], ack
    await eventually(lambda: bob.events("chat:message"))
    assert [m["text"] for m in bob.events("chat:message")] == ["back"]

    # Presence is live again: alice leaving is announced.
    await alice.close()
    await eventually(lambda: any(not u["online"] for u in updates_for(bob, "alice")))

    assert node.alive
    log = node.log()
    assert "Traceback" not in log
    # One warning per interval, not one per failing call: 21 failed presence
    # calls and 20 failed publishes within one interval.
    assert log.count("presence backend redis unavailable") <= 2, log
    assert log.count("Cannot publish to redis... giving up") <= 2, log
    assert log.count("Cannot publish to redis... retrying") <= 2, log


async def test_server_starts_while_redis_is_down(tmp_path, start_server, clients):
    redis_proc = redis_process(tmp_path)  # a port nobody listens on, yet
    node = start_server(cluster_config(redis_proc))
    assert await ready_status(node) == 503
    alice = await clients(node.url, make_token("alice"))  # accepted while Redis is down
    assert (await alice.call("ping", {}))["error"]["code"] == "unavailable"
    redis_proc.start()
    try:

        async def online() -> bool:
            record = await record_after_outage(node, "alice")
            return await ready_status(node) == 200 and record is not None and record["online"]

        await eventually(online, timeout=TTL)
    finally:
        redis_proc.stop()
    assert "Traceback" not in node.log()


def test_manager_retry_lines_count_as_one_message():
    # python-socketio's subscriber logs "retrying in 1 secs", "... 2 secs", ...
    # on every attempt while Redis is down: one message for the rate limit.
    flood = OncePerInterval(interval=60)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("socketio.server", logging.ERROR, __file__, 1, msg, (), None)

    passed = [
        flood.filter(record(f"Cannot receive from redis... retrying in {n} secs"))
        for n in (1, 2, 4, 8, 16, 32, 60, 60)
    ]
    assert passed == [True] + [False] * 7
    assert flood.filter(record("Cannot publish to redis... giving up"))


async def test_nodes_hear_each_other_again_soon_after_an_outage(redis_proc, start_server, clients):
    node_a, node_b = (
        start_server(cluster_config(redis_proc)),
        start_server(cluster_config(redis_proc)),
    )
    await wire_up(clients, [node_b], [node_a])
    bob = await clients(node_b.url, make_token("bob"))
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    alice = await clients(node_a.url, make_token("alice"))
    await eventually(lambda: updates_for(bob, "alice"))

    redis_proc.kill()
    # An outage of 8 s (python-socketio's subscriber logs "retrying in 1, 2, 4
    # secs" meanwhile). Throughout it the clients stay connected and presence
    # answers `unavailable`.
    outage_ends = time.monotonic() + 8
    while time.monotonic() < outage_ends:
        ack = await alice.call("ping", {})
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
        assert alice.sio.connected and bob.sio.connected
        await asyncio.sleep(0.2)
    redis_proc.start()
    for node in (node_a, node_b):
        await eventually(lambda n=node: ready_status(n, 200), timeout=10)
    ready_at = time.monotonic()

    # Node B hears node A again: a status change made on A reaches bob on B.
    statuses = itertools.cycle(["dnd", "online"])

    async def heard() -> bool:
        status = next(statuses)
        ack = await alice.call("presence:set_status", {"status": status})
        if not ack["ok"]:
            return False
        try:
            await eventually(lambda: updates_for(bob, "alice")[-1]["status"] == status, 0.5)
        except AssertionError:
            return False
        return True

    await eventually(heard, timeout=15)
    assert time.monotonic() - ready_at < 3  # measured: about 0.5 s, after 8 s or 25 s down

    async def alice_online() -> bool:
        record = await record_after_outage(node_b, "alice")
        return record is not None and record["online"] and record["connections"] == 1

    await eventually(alice_online, timeout=TTL)  # node A's refresh, every ttl/3
    assert "Traceback" not in node_a.log() + node_b.log()
