"""A Redis master SIGKILLed under 300 connected clients on two nodes (Sentinel, then Cluster).

Through the real server: after the failover every user is still online via the
HTTP API, nobody was announced offline (a subscriber listens throughout), users
who leave afterwards go offline once, and the nodes still carry chat messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import base_config
from tests.support.clients import eventually, http, make_token
from tests.support.cluster import SWEEP, sentinel, updates_for, wire_up
from tests.support.procs import Proc, redis_process
from tests.support.topologies import (  # noqa: F401 (module-scoped fixtures)
    ClusterSetup,
    SentinelSetup,
    cluster_setup,
    sentinel_setup,
)

USERS = [f"user-{n:03d}" for n in range(100)]
NAMESPACES = ["/chats", "/orders", "/notifications"]
LEAVERS = USERS[:10]
#: ttl well beyond failover + one refresh period, so no entry expires during it
TTL = 15.0
GRACE = 1.0


def node_config(presence_url: str, bus_url: str) -> dict[str, Any]:
    return base_config(
        presence={
            "backend": "redis",
            "ttl": TTL,
            "offline_grace": GRACE,
            "sweep_interval": SWEEP,
            "redis": {"url": presence_url},
            # first_write_after probes the storage with a status change every 50 ms
            "max_status_changes_per_minute": 100_000,
        },
        cluster={"manager": "redis", "url": bus_url},
    )


async def connect_everyone(clients: Any, nodes: list[Proc]) -> dict[str, dict[str, Any]]:
    """Each user on three namespaces, one client each, spread over both nodes."""
    by_user: dict[str, dict[str, Any]] = {u: {} for u in USERS}

    async def one(n: int, user_id: str, i: int, namespace: str) -> None:
        node = nodes[(n + i) % len(nodes)]
        client = await clients(node.url, make_token(user_id), namespaces=[namespace])
        by_user[user_id][namespace] = client

    jobs = [
        (n, user_id, i, namespace)
        for n, user_id in enumerate(USERS)
        for i, namespace in enumerate(NAMESPACES)
    ]
    for start in range(0, len(jobs), 30):  # bounded concurrency
        await asyncio.gather(*(one(*job) for job in jobs[start : start + 30]))
    return by_user


async def online_in_api(node: Proc, user_ids: list[str]) -> dict[str, bool]:
    status, body = await http("POST", f"{node.url}/api/v1/presence/query", {"user_ids": user_ids})
    if status != 200:
        return {}
    return {uid: record["online"] for uid, record in body["data"].items()}


async def first_write_after(client: Any) -> float:
    """Seconds until a presence write (status change) succeeds again after failing."""
    started = time.monotonic()
    failed = False
    while True:
        ack = await client.call("presence:set_status", {"status": "online"})
        if ack["ok"] and failed:
            return time.monotonic() - started
        if not ack["ok"]:
            assert ack["error"]["code"] == "unavailable", ack
            failed = True
        elif time.monotonic() - started > 60:
            raise AssertionError("no write failed: the master was not killed")
        await asyncio.sleep(0.05)


async def failover_scenario(
    nodes: list[Proc],
    clients: Any,
    kill_master: Callable[[], Awaitable[None]],
) -> float:
    node_a, node_b = nodes
    watcher = await clients(node_a.url, make_token("watcher"))
    await wire_up(clients, [node_a], [node_a, node_b])
    assert (await watcher.call("presence:subscribe", {"user_ids": USERS}))["ok"]
    by_user = await connect_everyone(clients, nodes)

    async def all_online() -> bool:
        online = await online_in_api(node_b, USERS)
        return len(online) == len(USERS) and all(online.values())

    await eventually(all_online, timeout=30)
    writer = await clients(node_a.url, make_token("writer"))

    writes = asyncio.create_task(first_write_after(writer))
    await asyncio.sleep(0)  # the first write goes out before the kill
    await kill_master()
    gap = await writes

    # Every user is still online, on both nodes' API, and nobody was announced offline.
    for node in nodes:
        await eventually(lambda n=node: all_online_on(n), timeout=30)
    # The pub/sub bus drops what is published while Redis is away; once node A
    # hears node B again, every later update reaches the watcher.
    await wire_up(clients, [node_a], [node_b])
    await sentinel(clients, node_b, watcher)
    assert not [u for u in USERS if any(not x["online"] for x in updates_for(watcher, u))]

    # Users who leave after the failover go offline after the grace, exactly once.
    left = time.monotonic()
    for user_id in LEAVERS:
        for client in by_user[user_id].values():
            await client.close()

    def gone() -> bool:
        return all(any(not x["online"] for x in updates_for(watcher, u)) for u in LEAVERS)

    await eventually(gone, timeout=TTL)
    assert time.monotonic() - left >= GRACE
    await sentinel(clients, node_b, watcher)
    for user_id in LEAVERS:
        offline = [x for x in updates_for(watcher, user_id) if not x["online"]]
        assert len(offline) == 1, (user_id, offline)
    stayed = await online_in_api(node_a, USERS)
    assert [u for u, on in stayed.items() if not on] == LEAVERS

    # Cross-node chat: a message sent on node A reaches a member on node B.
    speaker, listener = by_user[USERS[50]]["/chats"], by_user[USERS[51]]["/chats"]
    assert speaker.sio.connection_url.startswith(node_a.url)
    assert listener.sio.connection_url.startswith(node_b.url)
    for client in (speaker, listener):
        assert (await client.call("chat:join", {"conversation_id": "after"}))["ok"]

    async def delivered() -> bool:
        await speaker.call("chat:message", {"conversation_id": "after", "text": "hi"})
        return bool(listener.events("chat:message"))

    await eventually(delivered, timeout=30, interval=0.5)
    for node in nodes:
        assert node.alive and "Traceback" not in node.log()
    return gap


async def all_online_on(node: Proc) -> bool:
    online = await online_in_api(node, USERS)
    return len(online) == len(USERS) and all(online.values())


async def test_sentinel_master_sigkilled_under_load(sentinel_setup, start_server, clients):  # noqa: F811
    url = sentinel_setup.url()
    nodes = [start_server(node_config(url, url)) for _ in range(2)]

    async def kill() -> None:
        old = sentinel_setup.master_port()
        sentinel_setup.kill_master()
        await asyncio.to_thread(sentinel_setup.wait_failover, old)

    gap = await failover_scenario(nodes, clients, kill)
    print(f"sentinel failover gap (kill -> first presence write): {gap:.1f} s")


async def test_cluster_master_sigkilled_under_load(
    cluster_setup,  # noqa: F811
    start_server,
    clients,
    tmp_path,
):
    bus = redis_process(tmp_path).start()  # pub/sub is refused on a cluster URL
    try:
        bus_url = f"redis://127.0.0.1:{bus.port}/0"
        nodes = [start_server(node_config(cluster_setup.url(), bus_url)) for _ in range(2)]

        async def kill() -> None:
            slot = cluster_setup.keyslot("{sanic_rt:0}")
            victim = cluster_setup.master_of_slot(slot)
            victim.kill()
            await asyncio.to_thread(cluster_setup.wait_failover, victim, slot)

        gap = await failover_scenario(nodes, clients, kill)
        print(f"cluster failover gap (kill -> first presence write): {gap:.1f} s")
    finally:
        bus.stop()
