"""The core presence API over the memory backend: publishing, grace timers, limits, shutdown."""

from __future__ import annotations

import pytest

from backends.memory import MemoryBackend
from sanic_rt.config import PresenceConfig, load_config
from sanic_rt.presence import Presence, TooManyConnections
from sanic_rt.presence_model import Timings
from tests.support.clients import eventually


@pytest.fixture
async def presence():
    config = PresenceConfig(ttl=30, offline_grace=0.2, sweep_interval=0.05, idle_timeout=100)
    backend = MemoryBackend(load_config(env={}), Timings(30, 0.2, 100))
    api = Presence(backend, config, max_connections=3)
    published: list = []

    async def publish(changes):
        published.extend(changes)

    api.publisher = publish
    api.published = published  # type: ignore[attr-defined]
    await api.start()
    yield api
    await api.close()


def states(api) -> list[tuple[str, bool, str]]:
    return [(c.user_id, c.online, c.status) for c in api.published]


async def test_connect_ping_disconnect_publishes_each_transition_once(presence):
    await presence.connect("alice", "s1", "/chats", {"device": "web"})
    await presence.connect("alice", "s2", "/orders")
    assert await presence.mark_user_online("alice", "s1") == "online"
    assert states(presence) == [("alice", True, "online")]
    await presence.disconnect("alice", "s1")
    await presence.disconnect("alice", "s2")
    assert await presence.is_online("alice")  # in grace
    await eventually(lambda: len(presence.published) == 2)
    assert states(presence)[-1] == ("alice", False, "offline")
    assert not await presence.is_online("alice")
    assert (await presence.get("alice")).last_seen is not None


async def test_reconnect_in_grace_cancels_the_offline(presence):
    await presence.connect("alice", "s1", "/chats")
    await presence.disconnect("alice", "s1")
    await presence.connect("alice", "s2", "/chats")
    await presence.set_status("alice", "dnd")  # a later change, as a sentinel
    await eventually(lambda: states(presence)[-1] == ("alice", True, "dnd"))
    assert states(presence) == [("alice", True, "online"), ("alice", True, "dnd")]


async def test_connection_limit(presence):
    for sid in ("s1", "s2", "s3"):
        await presence.connect("alice", sid, "/chats")
    with pytest.raises(TooManyConnections):
        await presence.connect("alice", "s4", "/chats")
    assert "s4" not in presence.local


async def test_unknown_status_is_refused(presence):
    with pytest.raises(ValueError, match="unknown status"):
        await presence.set_status("alice", "busy")


async def test_listing_and_counts(presence):
    for user in ("carol", "alice", "bob"):
        await presence.connect(user, f"s-{user}", "/chats")
    assert await presence.online_count() == 3
    assert await presence.online_users(None, 2) == (["alice", "bob"], "bob")
    assert await presence.online_users("bob", 2) == (["carol"], None)
    stats = await presence.stats()
    assert (stats.online_users, stats.connections, stats.by_namespace) == (3, 3, {"/chats": 3})


async def test_close_leaves_this_nodes_users_in_grace(presence):
    await presence.connect("alice", "s1", "/chats")
    await presence.close()
    record = await presence.get("alice")
    assert record.online and record.connections == 0
    assert presence.local == {}
