"""The /chats plugin over the real server with real clients."""

from __future__ import annotations

import pytest

from tests.conftest import base_config
from tests.plugins import start_failure
from tests.support.clients import eventually, make_token


async def joined(clients, url, user, conversation="c1", **claims):
    client = await clients(url, make_token(user, **claims))
    ack = await client.call("chat:join", {"conversation_id": conversation})
    assert ack == {"ok": True, "data": {"conversation_id": conversation}}
    return client


def forbidden(ack):
    return ack["ok"] is False and ack["error"]["code"] == "forbidden"


def bad_request(ack, field):
    return ack == {"ok": False, "error": {**ack["error"], "code": "bad_request", "field": field}}


async def test_message_reaches_everyone_in_the_conversation(start_server, clients):
    server = start_server()
    alice_phone = await joined(clients, server.url, "alice")
    alice_laptop = await joined(clients, server.url, "alice")
    bob = await joined(clients, server.url, "bob")
    carol = await joined(clients, server.url, "carol", conversation="other")

    ack = await alice_phone.call(
        "chat:message", {"conversation_id": "c1", "text": "hi", "client_id": "tmp-1"}
    )
    assert ack["ok"] is True and set(ack["data"]) == {"id", "sent_at"}
    assert isinstance(ack["data"]["id"], str) and isinstance(ack["data"]["sent_at"], float)
    expected = {
        "id": ack["data"]["id"],
        "conversation_id": "c1",
        "sender_id": "alice",
        "text": "hi",
        "sent_at": ack["data"]["sent_at"],
        "client_id": "tmp-1",
    }
    for receiver in (bob, alice_laptop):  # the sender's other device included
        await eventually(lambda r=receiver: r.events("chat:message"))
        assert receiver.events("chat:message") == [expected]

    # Without client_id it is null. This second message is also the sentinel:
    # once it arrives, the first would have arrived before it if it were sent.
    ack2 = await bob.call("chat:message", {"conversation_id": "c1", "text": "yo"})
    await eventually(lambda: alice_phone.events("chat:message"))
    assert [m["text"] for m in alice_phone.events("chat:message")] == ["yo"]
    assert alice_phone.events("chat:message")[0]["client_id"] is None
    assert alice_phone.events("chat:message")[0]["id"] == ack2["data"]["id"]
    # Someone in another conversation hears nothing: a message there arrives first.
    await bob.call("chat:join", {"conversation_id": "other"})
    await bob.call("chat:message", {"conversation_id": "other", "text": "sentinel"})
    await eventually(lambda: carol.events("chat:message"))
    assert [m["text"] for m in carol.events("chat:message")] == ["sentinel"]


async def test_text_limits_and_bad_payloads(start_server, clients):
    server = start_server(base_config(plugins={"chats": {"max_text_length": 10}}))
    alice = await joined(clients, server.url, "alice")
    send = {"conversation_id": "c1"}
    assert bad_request(await alice.call("chat:message", {**send, "text": ""}), "text")
    assert bad_request(await alice.call("chat:message", {**send, "text": "   "}), "text")
    assert bad_request(await alice.call("chat:message", {**send, "text": "x" * 11}), "text")
    assert bad_request(await alice.call("chat:message", {**send, "text": 5}), "text")
    assert bad_request(
        await alice.call("chat:message", {**send, "text": "ok", "client_id": 3}), "client_id"
    )
    assert (await alice.call("chat:message", {**send, "text": "x" * 10}))["ok"] is True
    assert bad_request(await alice.call("chat:message", "hello"), "payload")
    assert bad_request(await alice.call("chat:join", {}), "conversation_id")
    assert bad_request(await alice.call("chat:join", {"conversation_id": ""}), "conversation_id")
    assert bad_request(await alice.call("chat:leave", {"conversation_id": 7}), "conversation_id")
    assert bad_request(await alice.call("chat:typing", {**send, "typing": "yes"}), "typing")
    assert bad_request(await alice.call("chat:read", {**send}), "message_id")
    assert alice.sio.connected


async def test_typing_goes_to_the_others_only(start_server, clients):
    server = start_server()
    alice_phone = await joined(clients, server.url, "alice")
    alice_laptop = await joined(clients, server.url, "alice")
    bob = await joined(clients, server.url, "bob")

    ack = await alice_phone.call("chat:typing", {"conversation_id": "c1", "typing": True})
    assert ack == {"ok": True, "data": {"conversation_id": "c1", "typing": True}}
    await eventually(lambda: bob.events("chat:typing"))
    assert bob.events("chat:typing") == [
        {"conversation_id": "c1", "user_id": "alice", "typing": True}
    ]
    # Sentinel: bob's message reaches both of alice's devices after the typing
    # event would have; neither got alice's own typing.
    await bob.call("chat:message", {"conversation_id": "c1", "text": "sentinel"})
    for device in (alice_phone, alice_laptop):
        await eventually(lambda d=device: d.events("chat:message"))
        assert device.events("chat:typing") == []

    await bob.call("chat:typing", {"conversation_id": "c1", "typing": False})
    for device in (alice_phone, alice_laptop):
        await eventually(lambda d=device: d.events("chat:typing"))
        assert device.events("chat:typing") == [
            {"conversation_id": "c1", "user_id": "bob", "typing": False}
        ]


async def test_read_receipts(start_server, clients):
    server = start_server()
    alice = await joined(clients, server.url, "alice")
    bob = await joined(clients, server.url, "bob")
    ack = await bob.call("chat:read", {"conversation_id": "c1", "message_id": "m9"})
    assert ack == {"ok": True, "data": {"conversation_id": "c1", "message_id": "m9"}}
    await eventually(lambda: alice.events("chat:read"))
    assert alice.events("chat:read") == [
        {"conversation_id": "c1", "user_id": "bob", "message_id": "m9"}
    ]


async def test_not_joined_or_left_is_forbidden(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice"))
    bob = await joined(clients, server.url, "bob")
    calls = [
        ("chat:message", {"conversation_id": "c1", "text": "hi"}),
        ("chat:typing", {"conversation_id": "c1", "typing": True}),
        ("chat:read", {"conversation_id": "c1", "message_id": "m1"}),
    ]
    for event, data in calls:
        assert forbidden(await alice.call(event, data)), event
    ack = await bob.call("chat:leave", {"conversation_id": "c1"})
    assert ack == {"ok": True, "data": {"conversation_id": "c1"}}
    for event, data in calls:
        assert forbidden(await bob.call(event, data)), event
    # Leaving twice is harmless.
    assert (await bob.call("chat:leave", {"conversation_id": "c1"}))["ok"] is True


async def test_membership_claim(start_server, clients):
    server = start_server(base_config(plugins={"chats": {"membership": "claim"}}))
    member = await clients(server.url, make_token("alice", conversations=["c1", 42]))
    stranger = await clients(server.url, make_token("bob"))
    assert (await member.call("chat:join", {"conversation_id": "c1"}))["ok"] is True
    assert (await member.call("chat:join", {"conversation_id": "42"}))["ok"] is True
    assert forbidden(await member.call("chat:join", {"conversation_id": "c2"}))
    assert forbidden(await stranger.call("chat:join", {"conversation_id": "c1"}))
    # A refused join leaves the connection out of the room.
    assert forbidden(await stranger.call("chat:message", {"conversation_id": "c1", "text": "x"}))


async def test_membership_open_is_the_dev_default(start_server, clients):
    server = start_server()
    anyone = await clients(server.url, make_token("bob"))
    assert (await anyone.call("chat:join", {"conversation_id": "any"}))["ok"] is True


async def test_production_default_is_claim(start_server, clients):
    server = start_server(base_config(server={"mode": "production"}))
    member = await clients(server.url, make_token("alice", conversations=["c1"]))
    assert (await member.call("chat:join", {"conversation_id": "c1"}))["ok"] is True
    assert forbidden(await member.call("chat:join", {"conversation_id": "c2"}))


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({"membership": "maybe"}, "membership: expected one of claim, open"),
        ({"max_text_length": 0}, "max_text_length: expected 1..1000000"),
        ({"max_text_length": "4000"}, "max_text_length: expected an integer"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_bad_config_stops_start_up(tmp_path, table, reason):
    code, lines = start_failure(tmp_path, base_config(plugins={"chats": table}))
    assert code == 2
    assert len(lines) == 1 and "'chats'" in lines[0] and reason in lines[0], lines
