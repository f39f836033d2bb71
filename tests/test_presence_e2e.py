"""Global presence over the real server (through its CLI) and real clients."""

from __future__ import annotations

import time

import pytest

from tests.conftest import base_config
from tests.support.clients import eventually, http, make_token
from tests.support.cluster import record_of, sentinel, updates_for


async def http_get(url: str) -> dict:
    status, data = await http("GET", url)
    assert status == 200, data
    return data


async def field_becomes(fetch, key: str, value) -> None:
    async def check() -> bool:
        return (await fetch())[key] == value

    await eventually(check)


async def test_online_across_namespaces_until_the_last_closes(start_server, clients):
    server = start_server()
    bob = await clients(server.url, make_token("bob"))
    snapshot = await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    assert snapshot == {
        "ok": True,
        "data": {"alice": {"online": False, "status": "offline", "last_seen": None}},
    }
    alice_chats = await clients(server.url, make_token("alice"), namespaces=["/chats"])
    alice_orders = await clients(server.url, make_token("alice"), namespaces=["/orders"])
    await eventually(lambda: updates_for(bob, "alice"))
    assert updates_for(bob, "alice") == [
        {"user_id": "alice", "online": True, "status": "online", "last_seen": None}
    ]
    await alice_chats.close()
    await field_becomes(lambda: record_of(server, "alice"), "namespaces", ["/orders"])
    await sentinel(clients, server, bob)
    assert len(updates_for(bob, "alice")) == 1  # still just the online
    await alice_orders.close()
    await eventually(lambda: len(updates_for(bob, "alice")) == 2)
    offline = updates_for(bob, "alice")[1]
    assert offline["online"] is False and offline["status"] == "offline"
    assert isinstance(offline["last_seen"], float)
    await sentinel(clients, server, bob)
    assert len(updates_for(bob, "alice")) == 2


async def test_two_devices_and_the_record(start_server, clients):
    server = start_server()
    phone = await clients(server.url, None, auth={"token": make_token("alice"), "device": "phone"})
    laptop = await clients(
        server.url, None, auth={"token": make_token("alice"), "device": "laptop"}
    )
    record = await record_of(server, "alice")
    assert record["online"] and record["connections"] == 2
    assert record["devices"] == ["laptop", "phone"] and record["namespaces"] == ["/chats"]
    await phone.close()
    await field_becomes(lambda: record_of(server, "alice"), "connections", 1)
    assert (await record_of(server, "alice"))["online"]
    await laptop.close()
    await field_becomes(lambda: record_of(server, "alice"), "online", False)


async def test_reload_within_grace_announces_nothing(start_server, clients):
    grace = 2.0
    server = start_server(base_config(presence={"offline_grace": grace}))
    bob = await clients(server.url, make_token("bob"))
    alice = await clients(server.url, make_token("alice"))
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    await alice.close()  # the page reloads...
    closed_at = time.monotonic()
    await clients(server.url, make_token("alice"))  # ...and comes back within the grace
    await sentinel(clients, server, bob)
    assert updates_for(bob, "alice") == []
    # A late offline would come when the grace ends: look again once it has.
    await eventually(lambda: time.monotonic() > closed_at + grace + 0.5, timeout=grace + 5)
    await sentinel(clients, server, bob)
    assert updates_for(bob, "alice") == []
    assert (await record_of(server, "alice"))["online"] is True


async def test_one_update_per_change_and_invisible(start_server, clients):
    server = start_server()
    bob = await clients(server.url, make_token("bob"))
    alice = await clients(server.url, make_token("alice"))
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    for status in ("dnd", "dnd", "away", "invisible", "online"):
        ack = await alice.call("presence:set_status", {"status": status})
        assert ack == {"ok": True, "data": {"status": status}}
    await sentinel(clients, server, bob)
    seen = [(u["online"], u["status"]) for u in updates_for(bob, "alice")]
    assert seen == [(True, "dnd"), (True, "away"), (False, "offline"), (True, "online")]


async def test_invisible_user_seen_as_offline_except_by_themself(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice"))
    bob = await clients(server.url, make_token("bob"))
    await alice.call("presence:set_status", {"status": "invisible"})
    mine = await alice.call("presence:query", {"user_ids": ["alice"]})
    theirs = await bob.call("presence:query", {"user_ids": ["alice"]})
    assert mine["data"]["alice"]["status"] == "invisible" and mine["data"]["alice"]["online"]
    assert theirs["data"]["alice"]["online"] is False
    assert theirs["data"]["alice"]["status"] == "offline"
    api = await record_of(server, "alice")
    assert api["status"] == "invisible" and api["online"] is True
    # Status survives a reconnect.
    await alice.close()
    again = await clients(server.url, make_token("alice"))
    ack = await again.call("ping", {})
    assert ack == {"ok": True, "data": {"status": "invisible"}}


async def test_unsubscribe_stops_updates(start_server, clients):
    server = start_server()
    bob = await clients(server.url, make_token("bob"))
    await bob.call("presence:subscribe", {"user_ids": ["alice", "carol"]})
    ack = await bob.call("presence:unsubscribe", {"user_ids": ["alice"]})
    assert ack == {"ok": True, "data": {"user_ids": ["carol"]}}
    await clients(server.url, make_token("alice"))
    await clients(server.url, make_token("carol"))
    await eventually(lambda: updates_for(bob, "carol"))
    await sentinel(clients, server, bob)
    assert updates_for(bob, "alice") == []


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("presence:query", None),
        ("presence:query", "alice"),
        ("presence:query", {}),
        ("presence:query", {"user_ids": "alice"}),
        ("presence:query", {"user_ids": [1, 2]}),
        ("presence:query", {"user_ids": [""]}),
        ("presence:query", {"user_ids": ["x" * 129]}),
        ("presence:query", {"user_ids": [f"u{i}" for i in range(501)]}),
        ("presence:subscribe", {"user_ids": [None]}),
        ("presence:subscribe", {"user_ids": [f"u{i}" for i in range(1001)]}),
        ("presence:unsubscribe", {"user_ids": {"a": 1}}),
        ("presence:set_status", {"status": "busy"}),
        ("presence:set_status", {"status": None}),
        ("presence:set_status", []),
    ],
)
async def test_malformed_payloads_get_bad_request(app_server, clients, event, payload):
    _app, url = app_server
    client = await clients(url, make_token("alice"))
    ack = await client.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
    assert ack["error"]["message"]
    # The connection is still there and still works.
    assert (await client.call("ping", {}))["ok"] is True


async def test_subscription_limit_counts_across_calls(app_server, clients):
    _app, url = app_server
    client = await clients(url, make_token("alice"))
    first = await client.call("presence:subscribe", {"user_ids": [f"u{i}" for i in range(600)]})
    assert first["ok"] is True and len(first["data"]) == 600
    more = await client.call("presence:subscribe", {"user_ids": [f"v{i}" for i in range(401)]})
    assert more["error"]["code"] == "bad_request"


async def test_http_presence_api(start_server, clients):
    url = start_server().url
    await clients(url, make_token("alice"), namespaces=["/chats", "/orders"])
    await clients(url, make_token("bob"))
    status, body = await http(
        "POST", url + "/api/v1/presence/query", {"user_ids": ["alice", "nobody"]}
    )
    assert status == 200
    data = body["data"]
    assert data["alice"]["online"] and data["alice"]["connections"] == 2
    assert data["nobody"] == {
        "user_id": "nobody",
        "online": False,
        "status": "offline",
        "last_seen": None,
        "connections": 0,
        "namespaces": [],
        "devices": [],
    }
    stats = await http_get(url + "/api/v1/presence/stats")
    assert stats == {
        "ok": True,
        "data": {
            "online_users": 2,
            "connections": 3,
            "by_namespace": {"/chats": 2, "/orders": 1},
        },
    }
    online = (await http_get(url + "/api/v1/presence/online?limit=1"))["data"]
    assert online == {"user_ids": ["alice"], "next_cursor": "alice"}
    rest = (await http_get(url + "/api/v1/presence/online?limit=1&cursor=alice"))["data"]
    assert rest == {"user_ids": ["bob"], "next_cursor": None}


async def test_lone_surrogate_ids_are_bad_requests(app_server, clients):
    _app, url = app_server
    client = await clients(url, make_token("alice"))
    for event in ("presence:query", "presence:subscribe"):
        ack = await client.call(event, {"user_ids": ["\ud800"]})
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
