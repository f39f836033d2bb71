"""Several server processes sharing one real redis-server: presence and messages cross nodes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.support.clients import Client, eventually, http, make_token
from tests.support.cluster import (
    SWEEP,
    TTL,
    check_config,
    cluster_config,
    record_of,
    sentinel,
    updates_for,
    wire_up,
)
from tests.support.metrics import samples, scrape
from tests.support.procs import write_toml


async def test_sigkill_of_one_node(redis_proc, start_server, clients):
    config = cluster_config(redis_proc)
    node_a, node_b = start_server(config), start_server(config)
    await wire_up(clients, [node_b], [node_a])
    watcher = await clients(node_b.url, make_token("watcher"))
    await watcher.call("presence:subscribe", {"user_ids": ["alice", "carol"]})
    # Clients of the node that dies must not try to reconnect to it forever.
    on_a = [Client(reconnection=False) for _ in range(2)]
    await on_a[0].connect(node_a.url, make_token("alice"))
    alice_b = await clients(node_b.url, make_token("alice"), namespaces=["/orders"])
    await on_a[1].connect(node_a.url, make_token("carol"))  # only on the node that dies
    await eventually(lambda: updates_for(watcher, "carol"))
    assert (await record_of(node_b, "alice"))["connections"] == 2

    node_a.kill()
    killed_at = time.monotonic()
    # carol's only entry expires (ttl after node A's last refresh) and node B's
    # sweeper announces it once; alice keeps her connection on node B.
    await eventually(lambda: len(updates_for(watcher, "carol")) == 2, timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + SWEEP + 1.5
    carol = updates_for(watcher, "carol")
    assert [u["online"] for u in carol] == [True, False]
    alice = await record_of(node_b, "alice")
    assert alice["online"] and alice["connections"] == 1 and alice["namespaces"] == ["/orders"]

    await alice_b.close()
    closed_at = time.monotonic()
    await eventually(lambda: len(updates_for(watcher, "alice")) == 2, timeout=TTL + 5)
    assert time.monotonic() - closed_at <= TTL + SWEEP
    await sentinel(clients, node_b, watcher)
    assert [u["online"] for u in updates_for(watcher, "alice")] == [True, False]
    assert [u["online"] for u in updates_for(watcher, "carol")] == [True, False]
    assert "Traceback" not in node_b.log()
    for client in on_a:
        await client.close()


@pytest.mark.parametrize(
    "bus",
    [
        {"manager": "redis"},
        {"manager": "redis-streams"},
        {"manager": "redis-streams", "routing": "targeted"},
    ],
    ids=["pubsub", "streams", "streams-targeted"],
)
async def test_messages_and_presence_cross_nodes(redis_proc, start_server, clients, bus):
    config = cluster_config(redis_proc)
    config["cluster"] = bus
    node_a, node_b = start_server(config), start_server(config)
    await wire_up(clients, [node_a, node_b], [node_a, node_b])

    # presence:update: alice connects to A, her subscriber is on B.
    bob = await clients(node_b.url, make_token("bob"), namespaces=["/chats", "/notifications"])
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    alice = await clients(node_a.url, make_token("alice"))
    await eventually(lambda: updates_for(bob, "alice"))
    assert updates_for(bob, "alice") == [
        {"user_id": "alice", "online": True, "status": "online", "last_seen": None}
    ]
    await alice.call("presence:set_status", {"status": "dnd"})
    await eventually(lambda: len(updates_for(bob, "alice")) == 2)
    assert updates_for(bob, "alice")[1]["status"] == "dnd"

    # A chat message from A reaches the room member on B.
    for client in (alice, bob):
        ack = await client.call("chat:join", {"conversation_id": "c1"})
        assert ack["ok"], ack
    ack = await alice.call("chat:message", {"conversation_id": "c1", "text": "hello from A"})
    assert ack["ok"], ack
    await eventually(lambda: bob.events("chat:message"))
    assert [m["text"] for m in bob.events("chat:message")] == ["hello from A"]

    # A notification pushed through A's HTTP API reaches bob on B.
    status, body = await http(
        "POST",
        f"{node_a.url}/api/v1/notifications",
        {"user_ids": ["bob"], "type": "t", "title": "hi"},
    )
    assert status == 200 and body["data"] == {"users": 1, "connected": 1}, body
    await eventually(lambda: bob.events("notification:new", "/notifications"))
    assert bob.events("notification:new", "/notifications")[0]["title"] == "hi"

    # Both nodes see one presence; A's HTTP API closes bob's connections on B.
    assert (await record_of(node_a, "bob"))["connections"] == 2
    status, body = await http("POST", f"{node_a.url}/api/v1/users/bob/disconnect")
    assert status == 200 and body["data"] == {"connections": 2}, body
    await eventually(lambda: not bob.sio.connected)

    async def bob_gone() -> bool:
        return (await record_of(node_a, "bob"))["connections"] == 0

    await eventually(bob_gone)


async def test_serve_with_two_workers_over_websocket(redis_proc, start_server, clients):
    config = cluster_config(redis_proc, server={"workers": 2, "transports": ["websocket"]})
    server = start_server(config)
    # uvicorn logs each worker's start; both must be up before we count on them.
    await eventually(
        lambda: len(set(re.findall(r"Started server process \[(\d+)\]", server.log()))) >= 2
    )
    watcher = await clients(server.url, make_token("watcher"))
    bus = redis.Redis(port=redis_proc.port)
    members: dict[str, Any] = {}

    async def both_workers_have_members() -> bool:
        # Each worker subscribes to the manager's channel on its first
        # connection: two subscribers means both workers took connections.
        if len(members) >= 8 and bus.pubsub_numsub("sanic_rt") == [(b"sanic_rt", 2)]:
            return True
        if len(members) < 40:  # the kernel picks the worker; ask again, bounded
            user = f"user{len(members)}"
            await watcher.call("presence:subscribe", {"user_ids": [user]})
            members[user] = await clients(server.url, make_token(user))
            assert (await members[user].call("chat:join", {"conversation_id": "room"}))["ok"]
        return False

    await eventually(both_workers_have_members, timeout=30)
    bus.close()
    # Whatever worker each landed on, everyone sees everyone.
    users = list(members)
    first, *others = members.values()
    await eventually(lambda: all(updates_for(watcher, u) for u in users))
    ack = await first.call("chat:message", {"conversation_id": "room", "text": "to all"})
    assert ack["ok"], ack
    await eventually(lambda: all(m.events("chat:message") for m in others), timeout=20)
    status, body = await http("GET", f"{server.url}/api/v1/presence/stats")
    assert status == 200 and body["data"]["online_users"] >= len(users) + 1
    assert "Traceback" not in server.log()


def test_workers_need_shared_backend_manager_and_websocket_only(tmp_path, redis_proc):
    good = cluster_config(redis_proc, server={"workers": 2, "transports": ["websocket"]})
    assert check_config(tmp_path, good).returncode == 0
    cases = [
        ({"presence": {"backend": "memory"}}, "presence.backend"),
        ({"cluster": {"manager": ""}}, "cluster.manager"),
        ({"server": {"transports": ["polling", "websocket"]}}, "server.transports"),
    ]
    for change, key in cases:
        bad = {name: {**good.get(name, {}), **change.get(name, {})} for name in good | change}
        result = check_config(tmp_path, bad)
        assert result.returncode == 2, (change, result.stderr)
        assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # serve refuses the same way, before forking anything.
    path = write_toml(tmp_path / "serve.toml", {**good, "cluster": {"manager": ""}})
    result = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cluster.manager" in result.stderr


async def test_graceful_restart_within_grace_announces_nothing(redis_proc, start_server, clients):
    # SIGTERM closes transports (clients reconnect) and leaves this node's users
    # in their offline grace, so a reconnect within it is invisible to others.
    config = cluster_config(redis_proc, presence={"offline_grace": 8})
    node_a, node_b = start_server(config), start_server(config)
    await wire_up(clients, [node_b], [node_a])
    watcher = await clients(node_b.url, make_token("watcher"))
    await watcher.call("presence:subscribe", {"user_ids": ["alice"]})
    alice = await clients(node_a.url, make_token("alice"))
    await eventually(lambda: updates_for(watcher, "alice"))

    node_a.signal(signal.SIGTERM)
    await eventually(lambda: not node_a.alive, timeout=15)
    assert node_a.proc.returncode == 0
    start_server(config, port=node_a.port)
    await eventually(lambda: alice.sio.connected, timeout=15)
    assert (await alice.call("ping", {}))["ok"]
    await sentinel(clients, node_b, watcher)
    assert [u["online"] for u in updates_for(watcher, "alice")] == [True]
    assert (await record_of(node_b, "alice"))["connections"] == 1


async def test_presence_transitions_are_counted_once_cluster_wide(
    redis_proc, start_server, clients
):
    """``sanic_rt_presence_transitions_total`` counts a change on the node that announced
    it only: summed over both nodes it equals the changes announced, which the event
    stream holds once each (the presence script appends them)."""
    config = cluster_config(redis_proc, events={"stream": {"enabled": True}})
    nodes = start_server(config), start_server(config)
    await wire_up(clients, list(nodes), list(nodes))
    watcher = await clients(nodes[1].url, make_token("watcher"))
    users = [f"counted{n}" for n in range(6)]
    await watcher.call("presence:subscribe", {"user_ids": users})
    connections = {u: await clients(nodes[n % 2].url, make_token(u)) for n, u in enumerate(users)}
    away, leaving = users[:2], users[2:4]
    for user in away:
        assert (await connections[user].call("presence:set_status", {"status": "away"}))["ok"]
    for user in leaving:  # offline after the grace, by whichever node settles it
        await connections[user].close()
    expected = {
        u: ["online", *(["away"] if u in away else []), *(["offline"] if u in leaving else [])]
        for u in users
    }

    def seen(user: str) -> list[str]:
        return [u["status"] if u["online"] else "offline" for u in updates_for(watcher, user)]

    await eventually(lambda: all(seen(u) == expected[u] for u in users))

    store = redis.Redis(port=redis_proc.port)

    def announced() -> list[dict[str, Any]]:
        keys = [k for k in store.scan_iter("*:events:*") if store.type(k) == b"stream"]
        assert keys
        return [json.loads(e[b"event"]) for k in keys for _, e in store.xrange(k)]

    def by_status(events: list[dict[str, Any]]) -> Counter[str]:
        return Counter(e["status"] if e["online"] else "offline" for e in events)

    async def counted_once() -> bool:
        texts = [await scrape(node.url) for node in nodes]
        counted = Counter[str]()
        for text in texts:
            for sample in samples(text):
                if sample.name == "sanic_rt_presence_transitions_total":
                    counted[sample.labels["status"]] += int(sample.value)
        return +counted == by_status(announced())

    # wire_up's probes go offline after their grace too: poll until both sides settle.
    await eventually(counted_once)
    events = announced()
    ours = [e for e in events if e["user_id"] in users]
    assert sorted(by_status(ours).elements()) == sorted(s for u in users for s in expected[u])
    store.close()
