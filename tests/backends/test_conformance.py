"""Presence semantics every backend must have, driven by an injected clock."""

from __future__ import annotations

import asyncio
import random

from sanic_rt.presence_model import Connection, PublicView
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


async def test_connect_many_admits_in_order_as_if_one_by_one(make_backends):
    (b,) = await make_backends()
    batch = [conn("u1", "s1"), conn("u2", "t1"), conn("u1", "s2"), conn("u1", "s3")]
    results = await b.connect_many(batch, T0, 2)
    assert [r.accepted for r in results] == [True, True, True, False]
    assert [r.changes for r in results] == [[online("u1")], [online("u2")], [], []]
    records = await b.get_many(["u1", "u2"], T0)
    assert records["u1"].connections == 2 and records["u2"].connections == 1
