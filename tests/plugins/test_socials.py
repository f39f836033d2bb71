"""The /socials plugin: friends' presence by the token's claim, and social events."""

from __future__ import annotations

from tests.conftest import base_config
from tests.plugins import start_failure
from tests.support.clients import eventually, http, make_token

NS = "/socials"


def updates_for(client, user_id):
    return [u for u in client.events("presence:update", NS) if u["user_id"] == user_id]


async def test_friends_are_followed_without_subscribing(start_server, clients):
    server = start_server()
    alice = await clients(
        server.url, make_token("alice", friends=["bob", "carol"]), namespaces=[NS]
    )
    # bob's presence on any namespace counts: one global presence per user.
    bob = await clients(server.url, make_token("bob"), namespaces=["/chats"])
    await eventually(lambda: updates_for(alice, "bob"))
    [update] = updates_for(alice, "bob")
    assert update == {"user_id": "bob", "online": True, "status": "online", "last_seen": None}

    await bob.call("presence:set_status", {"status": "dnd"})
    await eventually(lambda: len(updates_for(alice, "bob")) == 2)
    assert updates_for(alice, "bob")[1]["status"] == "dnd"

    # dave is no friend: a change of his is not announced to alice. carol
    # coming online afterwards is the sentinel.
    await clients(server.url, make_token("dave"), namespaces=["/chats"])
    await clients(server.url, make_token("carol"), namespaces=["/chats"])
    await eventually(lambda: updates_for(alice, "carol"))
    assert updates_for(alice, "dave") == []


async def test_invisible_friends_stay_hidden(start_server, clients):
    server = start_server()
    alice = await clients(
        server.url, make_token("alice", friends=["bob", "carol"]), namespaces=[NS]
    )
    bob = await clients(server.url, make_token("bob"), namespaces=["/chats"])
    await eventually(lambda: updates_for(alice, "bob"))
    await bob.call("presence:set_status", {"status": "invisible"})
    await eventually(lambda: len(updates_for(alice, "bob")) == 2)
    hidden = updates_for(alice, "bob")[1]
    assert (hidden["online"], hidden["status"]) == (False, "offline")

    # Invisible across reconnects: bob's second device is no news to alice.
    await clients(server.url, make_token("bob"), namespaces=["/socials"])
    await clients(server.url, make_token("carol"), namespaces=["/chats"])  # sentinel
    await eventually(lambda: updates_for(alice, "carol"))
    assert len(updates_for(alice, "bob")) == 2
    snapshot = await alice.call("presence:query", {"user_ids": ["bob"]}, namespace=NS)
    assert snapshot["data"]["bob"]["status"] == "offline"


async def test_explicit_subscription_still_one_update_per_change(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice", friends=["bob"]), namespaces=[NS])
    ack = await alice.call("presence:subscribe", {"user_ids": ["bob", "carol"]}, namespace=NS)
    assert ack["ok"] is True
    bob = await clients(server.url, make_token("bob"), namespaces=["/chats"])
    await eventually(lambda: updates_for(alice, "bob"))
    await bob.call("presence:set_status", {"status": "away"})
    await eventually(lambda: len(updates_for(alice, "bob")) == 2)
    # Unsubscribing explicitly keeps the automatic follow.
    await alice.call("presence:unsubscribe", {"user_ids": ["bob"]}, namespace=NS)
    await bob.call("presence:set_status", {"status": "online"})
    await clients(server.url, make_token("carol"), namespaces=["/chats"])  # sentinel
    await eventually(lambda: updates_for(alice, "carol"))
    await eventually(lambda: len(updates_for(alice, "bob")) == 3)
    # carol's update came after bob's last change, so nothing more about bob is on its way.
    assert [u["status"] for u in updates_for(alice, "bob")] == ["online", "away", "online"]


async def test_friends_claim_is_configurable(start_server, clients):
    server = start_server(base_config(plugins={"socials": {"friends_claim": "contacts"}}))
    alice = await clients(
        server.url, make_token("alice", contacts=["bob"], friends=["carol"]), namespaces=[NS]
    )
    await clients(server.url, make_token("carol"), namespaces=["/chats"])
    await clients(server.url, make_token("bob"), namespaces=["/chats"])  # sentinel
    await eventually(lambda: updates_for(alice, "bob"))
    assert updates_for(alice, "carol") == []


async def test_friends_beyond_max_friends_are_not_followed(start_server, clients):
    """security.md: only the first ``max_friends`` ids of the claim are followed."""
    server = start_server(base_config(plugins={"socials": {"max_friends": 2}}))
    alice = await clients(
        server.url, make_token("alice", friends=["bob", "carol", "dave"]), namespaces=[NS]
    )
    bob = await clients(server.url, make_token("bob"), namespaces=["/chats"])
    await clients(server.url, make_token("carol"), namespaces=["/chats"])
    await eventually(lambda: updates_for(alice, "bob") and updates_for(alice, "carol"))

    # dave, third in the claim, comes online and changes status; bob's change
    # after dave's is the sentinel: once it arrived, dave's would have too.
    dave = await clients(server.url, make_token("dave"), namespaces=["/chats"])
    await dave.call("presence:set_status", {"status": "away"})
    await bob.call("presence:set_status", {"status": "dnd"})
    await eventually(lambda: len(updates_for(alice, "bob")) == 2)
    assert updates_for(alice, "dave") == []


async def test_social_event(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice"), namespaces=[NS])
    body = {"user_ids": ["alice", "zed"], "type": "friend_request", "data": {"from": "bob"}}
    status, reply = await http("POST", f"{server.url}/api/v1/socials/events", body)
    assert (status, reply) == (200, {"ok": True, "data": {"users": 2, "connected": 1}})
    await eventually(lambda: alice.events("social:event", NS))
    [event] = alice.events("social:event", NS)
    assert set(event) == {"type", "data", "at"} and isinstance(event["at"], float)
    assert (event["type"], event["data"]) == ("friend_request", {"from": "bob"})

    for body, field in [
        ({"type": "x"}, "user_ids"),
        ({"user_ids": ["a"]}, "type"),
        ({"user_ids": ["a"], "type": "x", "data": 1}, "data"),
        (["a"], "body"),
    ]:
        status, reply = await http("POST", f"{server.url}/api/v1/socials/events", body)
        assert status == 400 and reply["error"]["code"] == "bad_request", body
        assert reply["error"]["field"] == field, body


def test_bad_config_stops_start_up(tmp_path):
    code, lines = start_failure(tmp_path, base_config(plugins={"socials": {"friends_claim": ""}}))
    assert code == 2
    assert len(lines) == 1 and "'socials'" in lines[0] and "friends_claim" in lines[0], lines
