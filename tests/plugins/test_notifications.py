"""The /notifications plugin: HTTP pushes and read state across a user's devices."""

from __future__ import annotations

from tests.conftest import base_config
from tests.plugins import start_failure
from tests.support.clients import eventually, http, make_token

NS = "/notifications"


async def test_notification_new(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice"), namespaces=[NS])
    bob = await clients(server.url, make_token("bob"), namespaces=[NS])
    body = {
        "user_ids": ["alice", "nobody"],
        "type": "mention",
        "title": "You were mentioned",
        "body": "in #general",
        "data": {"conversation_id": "c1"},
    }
    status, reply = await http("POST", f"{server.url}/api/v1/notifications", body)
    assert (status, reply) == (200, {"ok": True, "data": {"users": 2, "connected": 1}})
    await eventually(lambda: alice.events("notification:new", NS))
    [note] = alice.events("notification:new", NS)
    assert set(note) == {"id", "type", "title", "body", "data", "created_at"}
    assert isinstance(note["id"], str) and isinstance(note["created_at"], float)
    assert (note["type"], note["title"], note["body"], note["data"]) == (
        "mention",
        "You were mentioned",
        "in #general",
        {"conversation_id": "c1"},
    )

    # body and data are optional; this push is bob's sentinel too.
    minimal = {"user_ids": ["bob"], "type": "system", "title": "Hello"}
    status, reply = await http("POST", f"{server.url}/api/v1/notifications", minimal)
    assert (status, reply) == (200, {"ok": True, "data": {"users": 1, "connected": 1}})
    await eventually(lambda: bob.events("notification:new", NS))
    [note] = bob.events("notification:new", NS)
    assert (note["title"], note["body"], note["data"]) == ("Hello", "", {})
    assert note["id"] != alice.events("notification:new", NS)[0]["id"]


async def test_read_goes_to_the_users_other_devices(start_server, clients):
    server = start_server()
    phone = await clients(server.url, make_token("alice"), namespaces=[NS])
    laptop = await clients(server.url, make_token("alice"), namespaces=[NS])
    bob = await clients(server.url, make_token("bob"), namespaces=[NS])
    ack = await phone.call("notification:read", {"id": "n1"}, namespace=NS)
    assert ack == {"ok": True, "data": {"id": "n1"}}
    await eventually(lambda: laptop.events("notification:read", NS))
    assert laptop.events("notification:read", NS) == [{"id": "n1"}]

    # Sentinel: a later read from the laptop reaches the phone; the phone never
    # got its own read, and bob got none of alice's.
    await laptop.call("notification:read", {"id": "n2"}, namespace=NS)
    await eventually(lambda: phone.events("notification:read", NS))
    assert phone.events("notification:read", NS) == [{"id": "n2"}]
    await bob.call("notification:read", {"id": "b1"}, namespace=NS)
    bob_laptop = await clients(server.url, make_token("bob"), namespaces=[NS])
    await bob.call("notification:read", {"id": "b2"}, namespace=NS)
    await eventually(lambda: bob_laptop.events("notification:read", NS))
    assert bob_laptop.events("notification:read", NS) == [{"id": "b2"}]
    assert bob.events("notification:read", NS) == []

    for bad in ({}, {"id": ""}, {"id": 5}, "n1"):
        ack = await phone.call("notification:read", bad, namespace=NS)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", bad


BAD_BODIES = [
    ({"type": "t", "title": "x"}, "user_ids"),
    ({"user_ids": ["a"], "title": "x"}, "type"),
    ({"user_ids": ["a"], "type": "t"}, "title"),
    ({"user_ids": ["a"], "type": "t", "title": ""}, "title"),
    ({"user_ids": ["a"], "type": "t", "title": "x" * 201}, "title"),
    ({"user_ids": ["a"], "type": "t", "title": "x", "body": 3}, "body"),
    ({"user_ids": ["a"], "type": "t", "title": "x", "data": "d"}, "data"),
    ("text", "body"),
]


async def test_bad_bodies_get_400_naming_the_field(start_server):
    server = start_server()
    for body, field in BAD_BODIES:
        status, reply = await http("POST", f"{server.url}/api/v1/notifications", body)
        assert status == 400, body
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        assert reply["error"]["field"] == field, body


def test_bad_config_stops_start_up(tmp_path):
    config = base_config(plugins={"notifications": {"max_title_length": "long"}})
    code, lines = start_failure(tmp_path, config)
    assert code == 2
    assert len(lines) == 1 and "'notifications'" in lines[0] and "max_title_length" in lines[0]
