"""Faults heal completely: what an outage or a crashed node leaves behind is settled.

Real redis-server and server processes: Redis is SIGKILLed (no persistence, so
it comes back empty) under connected clients, or a node is SIGKILLed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import socketio

from sanic_rt.backend import BackendUnavailable
from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence import Presence
from sanic_rt.presence_model import PublicView
from tests.support.clients import Client, eventually, http, make_token
from tests.support.cluster import cluster_config, record_of, sentinel, updates_for, wire_up
from tests.support.procs import Proc, redis_process

TTL = 6.0


async def ready(node: Proc) -> bool:
    status, _body = await http("GET", node.url + "/ready")
    return status == 200


async def restart_empty(redis_proc: Proc, nodes: list[Proc]) -> None:
    redis_proc.start()  # same port, no persistence: every record is gone
    for node in nodes:
        await eventually(lambda n=node: ready(n), timeout=15)


async def test_leaving_during_an_outage_is_announced_once_after_it(
    redis_proc, start_server, clients
):
    config = cluster_config(redis_proc)
    node_a, node_b = start_server(config), start_server(config)
    await wire_up(clients, [node_a], [node_b])
    watcher = await clients(node_a.url, make_token("watcher"))
    leavers = [f"leaver{i}" for i in range(4)]
    stayers = ["stayer", "dora"]
    await watcher.call("presence:subscribe", {"user_ids": leavers + stayers})
    on_a = {user: await clients(node_a.url, make_token(user)) for user in leavers + stayers}
    # dora also has a connection on node B, which stays.
    await clients(node_b.url, make_token("dora"), namespaces=["/orders"])
    await eventually(lambda: all(updates_for(watcher, u) for u in leavers + stayers))

    redis_proc.kill()
    await eventually(lambda: not_ready(node_a))
    for user in [*leavers, "dora"]:  # dora leaves node A only
        await on_a[user].close()
    await restart_empty(redis_proc, [node_a, node_b])

    def offline_updates(user: str) -> list[dict[str, Any]]:
        return [u for u in updates_for(watcher, user) if not u["online"]]

    await eventually(lambda: all(offline_updates(u) for u in leavers), timeout=4 * TTL)
    for user in leavers:
        record = await record_of(node_b, user)
        assert not record["online"] and record["connections"] == 0
    # dora is on node B, whose refresh re-registered her: she must not flap offline.
    await eventually(lambda: record_online(node_a, "dora", 1), timeout=TTL)
    await sentinel(clients, node_a, watcher)
    await sentinel(clients, node_b, watcher)
    for user in leavers:
        assert len(offline_updates(user)) == 1, updates_for(watcher, user)
    for user in stayers:
        assert offline_updates(user) == [], updates_for(watcher, user)
    assert "Traceback" not in node_a.log() + node_b.log()


async def not_ready(node: Proc) -> bool:
    return not await ready(node)


async def record_online(node: Proc, user: str, connections: int) -> bool:
    record = await record_of(node, user)
    return record["online"] and record["connections"] == connections


class Watched(Client):
    """A client that records the order of the server's notice and the disconnect."""

    def __init__(self) -> None:
        super().__init__(reconnection=False)
        self.order: list[Any] = []
        self.sio.on("connection:closed", self.order.append, namespace="/chats")
        self.sio.on("disconnect", lambda *_: self.order.append("disconnect"), namespace="/chats")


async def test_the_connection_cap_holds_during_and_after_an_outage(redis_proc, start_server):
    cap = 3
    config = cluster_config(redis_proc, auth={"max_connections_per_user": cap})
    node_a, node_b = start_server(config), start_server(config)
    made: list[Watched] = []

    async def connect(node: Proc) -> Watched:
        client = Watched()
        made.append(client)
        return await client.connect(node.url, make_token("mallory"))

    try:
        registered = [await connect(node_a)]  # accepted while Redis is up
        redis_proc.kill()
        await eventually(lambda: not_ready(node_a))
        # While storage is down each node enforces the cap on its own connections.
        during = [await connect(node_a), await connect(node_a)]
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect(node_a)
        await eventually(lambda: made[-1].refusals)
        assert made[-1].refusals[-1]["data"]["code"] == "too_many_connections"
        during += [await connect(node_b) for _ in range(cap)]
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect(node_b)

        await restart_empty(redis_proc, [node_a, node_b])
        # 1 + 2 + 3 live connections, cap 3: three of those accepted during the
        # outage are closed, each told why before the disconnect.
        live = registered + during
        await eventually(lambda: sum(c.sio.connected for c in live) == cap, timeout=4 * TTL)
        await eventually(lambda: record_online(node_a, "mallory", cap), timeout=TTL)
        assert registered[0].sio.connected  # the one registered before the outage stays
        closed = [c for c in during if not c.sio.connected]
        for client in closed:
            await eventually(lambda c=client: "disconnect" in c.order)
            notice, *rest = client.order
            assert notice == {
                "code": "too_many_connections",
                "message": f"at most {cap} connections",
            }
            assert rest == ["disconnect"]
        # And it stays applied: one more connection is refused cluster-wide.
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect(node_b)
    finally:
        for client in made:
            await client.close()
    assert "Traceback" not in node_a.log() + node_b.log()


@pytest.mark.parametrize("backend", ["redis", "memcached"])
async def test_a_crashed_nodes_users_go_offline_before_their_ttl(
    backend, redis_proc, start_server, clients, request
):
    # node_ttl 3 s, connection ttl 30 s: by the ttl alone, offline would come
    # 20-30 s after the crash (ttl after node A's last refresh, every ttl/3).
    # (node_ttl not lower: a live node stalled for 2/3 of it on a loaded
    # machine would be judged dead.)
    long_ttl = 30.0
    presence: dict[str, Any] = {"ttl": long_ttl, "node_ttl": 3.0}
    if backend == "memcached":
        memcached = request.getfixturevalue("memcached_proc")
        servers = [f"127.0.0.1:{memcached.port}"]
        presence |= {"backend": "memcached", "memcached": {"servers": servers}}
    config = cluster_config(redis_proc, presence=presence)
    node_a, node_b = start_server(config), start_server(config)
    await wire_up(clients, [node_b], [node_a])
    watcher = await clients(node_b.url, make_token("watcher"))
    await watcher.call("presence:subscribe", {"user_ids": ["carol", "alice"]})
    on_a = [Client(reconnection=False) for _ in range(2)]
    await on_a[0].connect(node_a.url, make_token("carol"))
    await on_a[1].connect(node_a.url, make_token("alice"))
    await clients(node_b.url, make_token("alice"), namespaces=["/orders"])  # survives
    await eventually(lambda: updates_for(watcher, "carol") and updates_for(watcher, "alice"))

    node_a.kill()
    killed_at = time.monotonic()
    # Waits up to just before the earliest an entry's ttl could have expired.
    deadline = long_ttl * 2 / 3 - 1
    await eventually(lambda: len(updates_for(watcher, "carol")) == 2, timeout=deadline)
    assert time.monotonic() - killed_at < long_ttl * 2 / 3  # before any entry's ttl
    assert [u["online"] for u in updates_for(watcher, "carol")] == [True, False]
    alice = await record_of(node_b, "alice")
    assert alice["online"] and alice["connections"] == 1 and alice["namespaces"] == ["/orders"]
    await sentinel(clients, node_b, watcher)
    assert [u["online"] for u in updates_for(watcher, "alice")] == [True]
    assert "Traceback" not in node_b.log()
    for client in on_a:
        await client.close()


async def test_disconnects_kept_during_an_outage_are_bounded(tmp_path, caplog):
    # In process, over a real redis-server, with an injected clock.
    redis_proc = redis_process(tmp_path).start()
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    config = load_config(
        env={},
        overrides={
            "presence.backend": "redis",
            "presence.redis.url": url,
            "presence.ttl": TTL,
            "presence.offline_grace": 0.2,
            "presence.idle_timeout": 100,
            "presence.max_pending_disconnects": 2,
        },
    )
    host = PluginHost(config)
    host.load()
    backend = host.backends()["redis"](config, config.presence)
    now = [1_800_000_000.0]
    presence = Presence(backend, config.presence, max_connections=10, clock=lambda: now[0])
    published: list[PublicView] = []

    async def publish(changes: list[PublicView]) -> None:
        published.extend(changes)

    presence.publisher = publish
    await backend.start()
    try:
        users = ["u0", "u1", "u2"]
        for user in users:
            await presence.connect(user, f"sid-{user}", "/chats")
        redis_proc.kill()
        for user in users:
            with pytest.raises(BackendUnavailable):
                await presence.disconnect(user, f"sid-{user}")
        assert "max_pending_disconnects" in caplog.text
        redis_proc.start()  # empty
        published.clear()
        await presence.sweep()  # answers again; too early to settle anything
        assert published == []
        now[0] += presence.recovery_window
        await presence.sweep()  # this node has not refreshed since: still waiting
        assert published == []
        await presence.refresh_local()
        await presence.sweep()
        # The two kept are announced; the one over the bound is not (its record is gone).
        assert published == [PublicView(u, False, "offline", now[0]) for u in users[:2]], published
        await presence.sweep()
        assert len(published) == 2
    finally:
        await backend.close()
        redis_proc.stop()
