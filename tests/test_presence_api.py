"""The core presence API over the memory backend: publishing, grace timers, limits, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from backends.memory import MemoryBackend
from sanic_rt.app import create_app
from sanic_rt.backend import BackendUnavailable, TouchResult
from sanic_rt.config import PresenceConfig, load_config
from sanic_rt.presence import Presence, TooManyConnections
from sanic_rt.presence_model import Timings
from tests.support.clients import eventually


@pytest.fixture
async def presence():
    config = PresenceConfig(ttl=30, offline_grace=0.2, sweep_interval=0.05, idle_timeout=100)
    backend = MemoryBackend(load_config(env={}), config)
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


class CountingBackend(MemoryBackend):
    """The real memory backend, counting touch calls and able to hold one open."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.touch_calls: list[int] = []
        self.hold: asyncio.Event | None = None
        self.down: set[str] = set()

    async def touch(self, conns, now, activity):
        self.touch_calls.append(len(conns))
        if self.hold is not None:
            await self.hold.wait()
        up = [c for c in conns if c.user_id not in self.down]
        result = await super().touch(up, now, activity)
        return TouchResult(result.changes, result.statuses, frozenset(self.down))


@pytest.fixture
async def counted():
    config = PresenceConfig(ttl=30, offline_grace=0.2, sweep_interval=60, idle_timeout=100)
    backend = CountingBackend(load_config(env={}), config)
    api = Presence(backend, config, max_connections=3)
    await api.start()
    yield api, backend
    await api.close()


async def test_concurrent_pings_share_one_touch(counted):
    api, backend = counted
    for i in range(50):
        await api.connect(f"u{i}", f"s{i}", "/chats")
    statuses = await asyncio.gather(*(api.mark_user_online(f"u{i}", f"s{i}") for i in range(50)))
    assert statuses == ["online"] * 50
    assert backend.touch_calls == [50]


async def test_a_ping_whose_storage_is_down_answers_unavailable_alone(counted):
    api, backend = counted
    await api.connect("up", "s1", "/chats")
    await api.connect("down", "s2", "/chats")
    backend.down = {"down"}
    results = await asyncio.gather(
        api.mark_user_online("up", "s1"), api.mark_user_online("down", "s2"), return_exceptions=True
    )
    assert results[0] == "online" and isinstance(results[1], BackendUnavailable)


async def test_a_close_racing_the_refresh_leaves_no_ghost(counted):
    api, backend = counted
    await api.connect("alice", "s1", "/chats")
    backend.hold = asyncio.Event()
    refresh = asyncio.create_task(api.refresh_local())
    await eventually(lambda: backend.touch_calls)  # the refresh holds s1 in flight
    disconnect = asyncio.create_task(api.disconnect("alice", "s1"))
    await eventually(disconnect.done)
    backend.hold.set()  # now the refresh lands, after the close: it re-created s1
    await refresh
    record = await api.get("alice")
    assert record.connections == 0 and record.sids == ()


def test_one_timings_object_reaches_the_backend_and_the_presence_api():
    # ttl and its siblings used to be copied from [presence] into a second container.
    config = load_config(env={}, overrides={"presence.ttl": 12, "presence.sweep_interval": 0.5})
    presence = create_app(config).ctx.gateway.presence
    assert isinstance(config.presence, Timings)
    assert presence.backend.timings is config.presence
    assert presence.timings is config.presence
    assert Timings(30, 0.2, 100) == Timings(ttl=30, offline_grace=0.2, idle_timeout=100)
