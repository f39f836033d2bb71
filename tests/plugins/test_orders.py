"""The /orders plugin: HTTP pushes from the order service to users' connections."""

from __future__ import annotations

from tests.conftest import base_config
from tests.plugins import start_failure
from tests.support.clients import eventually, http, make_token

API_KEY = "orders-test-key"


async def test_order_update_reaches_each_listed_users_connections(start_server, clients):
    server = start_server(base_config(api={"keys": [API_KEY]}))
    alice_phone = await clients(server.url, make_token("alice"), namespaces=["/orders"])
    alice_laptop = await clients(server.url, make_token("alice"), namespaces=["/orders"])
    alice_chats = await clients(server.url, make_token("alice"), namespaces=["/chats"])
    bob = await clients(server.url, make_token("bob"), namespaces=["/orders"])

    url = f"{server.url}/api/v1/orders/o-17/events"
    body = {"user_ids": ["alice", "carol"], "status": "shipped", "data": {"eta": 3}}
    status, reply = await http("POST", url, body, api_key=API_KEY)
    # carol has no connection; alice's /chats connection does not count.
    assert (status, reply) == (200, {"ok": True, "data": {"users": 2, "connected": 1}})
    for device in (alice_phone, alice_laptop):
        await eventually(lambda d=device: d.events("order:update", "/orders"))
        [update] = device.events("order:update", "/orders")
        assert set(update) == {"order_id", "status", "data", "at"}
        assert update["order_id"] == "o-17" and update["status"] == "shipped"
        assert update["data"] == {"eta": 3} and isinstance(update["at"], float)

    # data is optional; this push to bob is also the sentinel for "bob got nothing before".
    status, reply = await http("POST", url, {"user_ids": ["bob"], "status": "paid"}, API_KEY)
    assert (status, reply) == (200, {"ok": True, "data": {"users": 1, "connected": 1}})
    await eventually(lambda: bob.events("order:update", "/orders"))
    assert [(u["status"], u["data"]) for u in bob.events("order:update", "/orders")] == [
        ("paid", {})
    ]
    assert alice_chats.events("order:update", "/chats") == []


BAD_BODIES = [
    ({"status": "shipped"}, "user_ids"),
    ({"user_ids": "alice", "status": "shipped"}, "user_ids"),
    ({"user_ids": [1], "status": "shipped"}, "user_ids"),
    ({"user_ids": ["alice"]}, "status"),
    ({"user_ids": ["alice"], "status": ""}, "status"),
    ({"user_ids": ["alice"], "status": "x", "data": [1]}, "data"),
    ([1, 2], "body"),
]


async def test_bad_bodies_get_400_naming_the_field(start_server):
    server = start_server()
    for body, field in BAD_BODIES:
        status, reply = await http("POST", f"{server.url}/api/v1/orders/o1/events", body)
        assert status == 400, body
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        assert reply["error"]["field"] == field, body


async def test_invalid_json_and_api_key(start_server):
    server = start_server(base_config(api={"keys": [API_KEY]}))
    url = f"{server.url}/api/v1/orders/o1/events"
    status, reply = await http("POST", url, raw=b"{not json", api_key=API_KEY)
    assert status == 400 and reply["error"]["field"] == "body"
    status, reply = await http("POST", url, {"user_ids": [], "status": "x"})
    assert status == 401 and reply["error"]["code"] == "unauthorized"


async def test_max_user_ids(start_server):
    server = start_server(base_config(plugins={"orders": {"max_user_ids": 2}}))
    url = f"{server.url}/api/v1/orders/o1/events"
    status, reply = await http("POST", url, {"user_ids": ["a", "b", "c"], "status": "x"})
    assert status == 400 and reply["error"]["field"] == "user_ids"


def test_bad_config_stops_start_up(tmp_path):
    code, lines = start_failure(tmp_path, base_config(plugins={"orders": {"max_user_ids": -1}}))
    assert code == 2
    assert len(lines) == 1 and "'orders'" in lines[0] and "max_user_ids" in lines[0], lines
