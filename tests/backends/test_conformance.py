"""Presence semantics every backend must have, driven by an injected clock."""

from __future__ import annotations

import asyncio
import random

from sanic_rt.presence_model import Connection, PublicView, UserState
from tests.backends.conftest import TIMINGS

T0 = 1_800_000_000.0  # a fixed "now"; expiry is decided from these timestamps
LIMIT = 50


def conn(user: str, sid: str, ns: str = "/chats", device: str = "") -> Connection:
    return Connection(user, sid, ns, device)


def online(user: str, status: str = "online", last_seen: float | None = None) -> PublicView:
    return PublicView(user, True, status, last_seen)


def offline(user: str, last_seen: float | None) -> PublicView:
    return PublicView(user, False, "offline", last_seen)


async def test_first_connection_announces_online_once(make_backends):
    (b,) = await make_backends()
    first = await b.connect(conn("u1", "s1"), T0, LIMIT)
    second = await b.connect(conn("u1", "s2", "/orders"), T0 + 1, LIMIT)
    assert first.accepted and first.changes == [online("u1")]
    assert second.accepted and second.changes == []
    record = (await b.get_many(["u1"], T0 + 1))["u1"]
    assert record.online and record.connections == 2
    assert record.namespaces == ("/chats", "/orders")


async def test_offline_only_after_last_connection_and_grace(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    await b.connect(conn("u1", "s2", "/orders"), T0, LIMIT)
    assert (await b.disconnect("u1", "s1", T0 + 1)).changes == []
    last = await b.disconnect("u1", "s2", T0 + 2)
    assert last.changes == [] and last.grace_until == T0 + 2 + TIMINGS.offline_grace
    assert await b.settle(["u1"], T0 + 6.9) == []
    assert (await b.get_many(["u1"], T0 + 6.9))["u1"].online
    assert await b.settle(["u1"], T0 + 7) == [offline("u1", T0 + 7)]
    assert await b.settle(["u1"], T0 + 8) == []
    assert await b.sweep(T0 + 100, 100) == []
    record = (await b.get_many(["u1"], T0 + 8))["u1"]
    assert not record.online and record.last_seen == T0 + 7 and record.connections == 0


async def test_reconnect_within_grace_announces_nothing(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    await b.disconnect("u1", "s1", T0 + 1)
    assert (await b.connect(conn("u1", "s2"), T0 + 3, LIMIT)).changes == []
    assert await b.settle(["u1"], T0 + 7) == []
    assert await b.sweep(T0 + 7, 100) == []
    assert (await b.get_many(["u1"], T0 + 7))["u1"].online


async def test_sweeper_of_another_node_announces_expiry_once(make_backends):
    node_a, node_b, node_c = await make_backends(3)
    await node_a.connect(conn("u1", "s1"), T0, LIMIT)
    assert await node_b.sweep(T0 + 9.9, 100) == []
    sweeps = await asyncio.gather(node_b.sweep(T0 + 10.5, 100), node_c.sweep(T0 + 10.5, 100))
    assert sorted(map(len, sweeps)) == [0, 1]
    assert [c for s in sweeps for c in s] == [offline("u1", T0 + 10.5)]
    assert await node_b.online_count() == 0


async def test_touch_extends_and_recreates_connections(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    result = await b.touch([conn("u1", "s1")], T0 + 8, activity=False)
    assert result.changes == [] and result.statuses == {"u1": "online"}
    assert await b.sweep(T0 + 12, 100) == []
    assert await b.sweep(T0 + 18.5, 100) == [offline("u1", T0 + 18.5)]
    # A refresh of a connection the storage lost (restart) re-creates it.
    again = await b.touch([conn("u1", "s1"), conn("u2", "s9")], T0 + 20, activity=False)
    assert sorted(again.changes, key=lambda c: c.user_id) == [
        online("u1", last_seen=T0 + 18.5),
        online("u2"),
    ]


async def test_connection_limit_per_user(make_backends):
    (b,) = await make_backends()
    assert (await b.connect(conn("u1", "s1"), T0, 2)).accepted
    assert (await b.connect(conn("u1", "s2", "/orders"), T0, 2)).accepted
    assert not (await b.connect(conn("u1", "s3"), T0, 2)).accepted
    assert (await b.get_many(["u1"], T0))["u1"].connections == 2
    await b.disconnect("u1", "s1", T0 + 1)
    assert (await b.connect(conn("u1", "s3"), T0 + 1, 2)).accepted
    # Expired entries do not count against the limit.
    assert (await b.connect(conn("u1", "s4"), T0 + 20, 2)).accepted


async def test_status_is_kept_and_invisible_looks_offline(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    record, changes = await b.set_status("u1", "dnd", T0 + 1)
    assert record.status == "dnd" and changes == [online("u1", "dnd")]
    record, changes = await b.set_status("u1", "invisible", T0 + 2)
    assert record.status == "invisible" and record.online
    assert changes == [offline("u1", T0 + 2)]
    assert record.public == offline("u1", T0 + 2)
    # An invisible user's real offline and reconnect move nothing others see.
    await b.disconnect("u1", "s1", T0 + 3)
    assert await b.settle(["u1"], T0 + 9) == []
    record = (await b.get_many(["u1"], T0 + 9))["u1"]
    assert record.last_seen == T0 + 9 and record.public == offline("u1", T0 + 2)
    assert (await b.connect(conn("u1", "s2"), T0 + 10, LIMIT)).changes == []
    record = (await b.get_many(["u1"], T0 + 10))["u1"]
    assert record.status == "invisible" and record.chosen_status == "invisible"
    _, changes = await b.set_status("u1", "online", T0 + 11)
    assert changes == [online("u1", last_seen=T0 + 2)]


async def test_idle_users_turn_away_and_activity_clears_it(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    for t in (5, 10, 15):  # refreshes keep the connection, but are not activity
        await b.touch([conn("u1", "s1")], T0 + t * 6, activity=False)
        assert await b.sweep(T0 + t * 6, 100) == []
    await b.touch([conn("u1", "s1")], T0 + 99, activity=False)
    assert await b.sweep(T0 + 100, 100) == [online("u1", "away")]
    assert (await b.get_many(["u1"], T0 + 100))["u1"].status == "away"
    result = await b.touch([conn("u1", "s1")], T0 + 101, activity=True)
    assert result.changes == [online("u1")] and result.statuses == {"u1": "online"}
    # Auto away applies only over "online".
    await b.set_status("u1", "dnd", T0 + 102)
    for t in range(105, 215, 8):
        await b.touch([conn("u1", "s1")], T0 + t, activity=False)
        assert await b.sweep(T0 + t, 100) == []
    assert (await b.get_many(["u1"], T0 + 214))["u1"].status == "dnd"


async def test_counts_listing_and_stats(make_backends):
    (b,) = await make_backends()
    users = [f"user{i:02d}" for i in range(7)]
    for i, user in enumerate(users):
        await b.connect(conn(user, f"s{i}", "/chats", "phone"), T0, LIMIT)
    await b.connect(conn("user00", "sx", "/orders"), T0, LIMIT)
    await b.connect(conn("zz-off", "sy"), T0, LIMIT)
    await b.disconnect("zz-off", "sy", T0)
    await b.settle(["zz-off"], T0 + 10)
    assert await b.online_count() == 7
    seen, cursor = [], None
    while True:
        page, cursor = await b.online_users(cursor, 3)
        seen += page
        if cursor is None:
            break
    assert seen == users
    stats = await b.stats(T0 + 1)
    assert stats.online_users == 7 and stats.connections == 8
    assert stats.by_namespace == {"/chats": 7, "/orders": 1}
    record = (await b.get_many(["user00"], T0 + 1))["user00"]
    assert record.devices == ("phone",)


async def test_bulk_query_unknown_users_are_offline(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("a", "s1"), T0, LIMIT)
    records = await b.get_many(["a", "nobody", "b"], T0)
    assert list(records) == ["a", "nobody", "b"]
    assert records["a"].online and not records["nobody"].online
    assert records["nobody"].last_seen is None and records["nobody"].status == "offline"


async def test_concurrent_connects_and_disconnects_end_consistent(make_backends):
    nodes = await make_backends(3)
    rng = random.Random(7)
    changes: list[PublicView] = []

    async def session(i: int) -> None:
        node = nodes[i % len(nodes)]
        await asyncio.sleep(rng.random() / 100)
        changes.extend((await node.connect(conn("u1", f"s{i}"), T0, 1000)).changes)
        await asyncio.sleep(rng.random() / 100)
        changes.extend((await node.disconnect("u1", f"s{i}", T0 + 1)).changes)

    await asyncio.gather(*(session(i) for i in range(40)))
    changes += await nodes[0].settle(["u1"], T0 + 7)
    changes += await nodes[1].sweep(T0 + 7, 100)
    # Every reconnect lands within the grace of the last close: exactly one online
    # (the first connect) and one offline (after the last grace), nothing between.
    assert [c.online for c in changes] == [True, False]
    record = (await nodes[2].get_many(["u1"], T0 + 7))["u1"]
    assert not record.online and record.connections == 0
    assert await nodes[2].online_count() == 0


async def test_concurrent_settles_announce_offline_exactly_once(make_backends):
    nodes = await make_backends(3)
    for i in range(20):
        await nodes[0].connect(conn(f"u{i}", f"s{i}"), T0, LIMIT)
        await nodes[0].disconnect(f"u{i}", f"s{i}", T0)
    ids = [f"u{i}" for i in range(20)]
    results = await asyncio.gather(
        nodes[0].settle(ids, T0 + 6), nodes[1].settle(ids, T0 + 6), nodes[2].sweep(T0 + 6, 100)
    )
    announced = sorted(c.user_id for r in results for c in r)
    assert announced == sorted(ids)


async def test_every_change_is_numbered_with_a_growing_seq(make_backends):
    """seq grows with each announced change of a user, whichever node decides it."""
    b1, b2 = await make_backends(2)
    changes = (await b1.connect(conn("u1", "s1"), T0, LIMIT)).changes
    changes += (await b2.set_status("u1", "dnd", T0 + 1))[1]
    changes += (await b1.set_status("u1", "dnd", T0 + 1.5))[1]  # no change, no seq
    changes += (await b2.disconnect("u1", "s1", T0 + 2)).changes
    changes += await b1.settle(["u1"], T0 + 2 + TIMINGS.offline_grace)
    changes += (await b2.connect(conn("u1", "s2"), T0 + 20, LIMIT)).changes
    changes += (await b2.connect(conn("u2", "s3"), T0 + 20, LIMIT)).changes
    assert [(c.user_id, c.online, c.was_online) for c in changes] == [
        ("u1", True, False),
        ("u1", True, True),
        ("u1", False, True),
        ("u1", True, False),
        ("u2", True, False),
    ]
    u1 = [c.seq for c in changes if c.user_id == "u1"]
    assert u1 == sorted(set(u1)) and u1[0] >= int(T0 * 1000)
    assert [c.at for c in changes] == [T0, T0 + 1, T0 + 7, T0 + 20, T0 + 20]


def _event_view(c: PublicView) -> tuple:
    return (c.user_id, c.online, c.status, c.last_seen, c.seq, c.at, c.was_online)


async def test_random_operations_match_the_python_rules_seq_included(make_backends):
    """Every backend (the Lua script for Redis) against UserState itself, step by step."""
    (b,) = await make_backends()
    rng = random.Random(14)
    model: dict[str, UserState] = {}
    now = T0
    for _step in range(150):
        now += rng.choice([0.0, 0.5, 2.0, 6.0])
        user, sid = f"u{rng.randrange(3)}", f"s{rng.randrange(4)}"
        op = rng.choice(["connect", "connect", "disconnect", "settle", "status", "touch"])
        state = (
            model.setdefault(user, UserState())
            if op in ("connect", "status", "touch")
            else (model.get(user))
        )
        before = state.public_view(user) if state is not None else None
        if op == "connect":
            got = (await b.connect(conn(user, sid), now, 2)).changes
            accepted = state.connect(conn(user, sid), now, TIMINGS, 2)
            want = state.announce(user, before, now) if accepted else []
        elif op == "disconnect":
            got = (await b.disconnect(user, sid, now)).changes
            if state is not None:
                state.disconnect(sid, now, TIMINGS)
            want = state.announce(user, before, now) if state is not None else []
        elif op == "settle":
            got = await b.settle([user], now)
            if state is not None:
                state.settle(now, TIMINGS)
            want = state.announce(user, before, now) if state is not None else []
        elif op == "status":
            status = rng.choice(["online", "away", "dnd", "invisible"])
            got = (await b.set_status(user, status, now))[1]
            state.set_status(status, now)
            want = state.announce(user, before, now)
        else:
            activity = rng.random() < 0.5
            got = (await b.touch([conn(user, sid)], now, activity)).changes
            state.touch(conn(user, sid), now, TIMINGS, activity)
            want = state.announce(user, before, now)
        assert [_event_view(c) for c in got] == [_event_view(c) for c in want], (op, user)


# --- outages and node crashes (docs/backends.md, "Outages and node crashes") ------


def on_node(user: str, sid: str, node: str) -> Connection:
    return Connection(user, sid, "/chats", "", node)


async def test_disconnect_after_outage_is_a_disconnect_when_the_record_is_kept(make_backends):
    (b,) = await make_backends()
    await b.connect(conn("u1", "s1"), T0, LIMIT)
    result = await b.disconnect_after_outage("u1", "s1", T0 + 1)
    assert result.changes == [] and result.grace_until == T0 + 1 + TIMINGS.offline_grace
    assert await b.settle(["u1"], T0 + 7) == [offline("u1", T0 + 7)]


async def test_lost_record_is_announced_offline_exactly_once(make_backends):
    # The storage lost u1's record (a restart without persistence) while two
    # nodes held a disconnect of u1 that failed: one of them announces offline.
    nodes = await make_backends(2)
    results = await asyncio.gather(
        nodes[0].disconnect_after_outage("u1", "s1", T0),
        nodes[1].disconnect_after_outage("u1", "s2", T0),
    )
    assert [c for r in results for c in r.changes] == [offline("u1", T0)]
    record = (await nodes[0].get_many(["u1"], T0 + 1))["u1"]
    assert not record.online and record.last_seen == T0
    assert await nodes[1].sweep(T0 + 100, 100) == []


async def test_a_user_re_registered_elsewhere_is_not_announced_offline(make_backends):
    node_a, node_b = await make_backends(2)
    # The record was lost; node B's refresh re-created the user's other connection.
    await node_b.touch([conn("u1", "s2")], T0, activity=False)
    result = await node_a.disconnect_after_outage("u1", "s1", T0 + 1)
    assert result.changes == [] and result.grace_until is None
    assert (await node_a.get_many(["u1"], T0 + 1))["u1"].online


NODE_TTL = 3.0


async def test_a_dead_nodes_connections_are_settled_before_their_ttl(make_backends):
    node_a, node_b = await make_backends(2)
    await node_a.connect(on_node("u1", "s1", "A"), T0, LIMIT)
    await node_a.connect(on_node("u2", "s2", "A"), T0, LIMIT)
    await node_b.connect(on_node("u2", "s3", "B"), T0, LIMIT)
    assert await node_a.node_heartbeat("A", T0, NODE_TTL) == []
    assert await node_b.node_heartbeat("B", T0, NODE_TTL) == []
    assert await node_b.node_heartbeat("B", T0 + 2, NODE_TTL) == []
    # A stops beating; B finds it dead after node_ttl, long before the entries' ttl (10).
    dead = await node_b.node_heartbeat("B", T0 + 4, NODE_TTL)
    assert dead == ["A"]
    swept = await node_b.settle_nodes(dead, T0 + 4, 100)
    assert swept.changes == [offline("u1", T0 + 4)] and swept.remaining == frozenset()
    u2 = (await node_b.get_many(["u2"], T0 + 4))["u2"]
    assert u2.online and u2.connections == 1 and u2.sids == (("s3", "/chats"),)
    # Nothing twice: a second survivor finds nothing left, and A is then forgotten.
    assert (await node_b.settle_nodes(dead, T0 + 4, 100)).changes == []
    assert await node_b.node_heartbeat("B", T0 + 5, NODE_TTL, forget=dead) == []
    assert await node_b.sweep(T0 + 100, 100) == [offline("u2", T0 + 100)]


async def test_settling_a_dead_node_is_bounded_per_call(make_backends):
    node_a, node_b = await make_backends(2)
    users = [f"u{i}" for i in range(12)]
    for i, user in enumerate(users):
        await node_a.connect(on_node(user, f"s{i}", "A"), T0, LIMIT)
    await node_a.node_heartbeat("A", T0, NODE_TTL)
    dead = await node_b.node_heartbeat("B", T0 + 4, NODE_TTL)
    announced: list[str] = []
    per_call = 5 * getattr(node_b, "shards", 1)  # Redis: the limit is per shard, as in sweep
    for _ in range(20):
        swept = await node_b.settle_nodes(dead, T0 + 4, 5)
        assert len(swept.changes) <= per_call
        announced += [c.user_id for c in swept.changes]
        if not swept.remaining:
            break
        assert swept.remaining == frozenset({"A"})
    assert sorted(announced) == sorted(users)
    assert await node_b.online_count() == 0


async def test_connect_many_admits_in_order_as_if_one_by_one(make_backends):
    (b,) = await make_backends()
    batch = [conn("u1", "s1"), conn("u2", "t1"), conn("u1", "s2"), conn("u1", "s3")]
    results = await b.connect_many(batch, T0, 2)
    assert [r.accepted for r in results] == [True, True, True, False]
    assert [r.changes for r in results] == [[online("u1")], [online("u2")], [], []]
    records = await b.get_many(["u1", "u2"], T0)
    assert records["u1"].connections == 2 and records["u2"].connections == 1
