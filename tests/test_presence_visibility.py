"""Issue 11, finding 15: presence reads go through the ``authorize`` hook (``presence.read``)."""

from __future__ import annotations

from sanic_rt.testing import config_from_dict, inline_plugin, running_app, token
from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token

FRIENDS_ONLY = base_config(plugins={"socials": {"presence_visibility": "friends"}})


def updates_for(client, user_id, namespace="/chats"):
    return [u for u in client.events("presence:update", namespace) if u["user_id"] == user_id]


async def test_friends_visibility_leaves_others_out_of_query_and_subscribe(start_server, clients):
    server = start_server(FRIENDS_ONLY)
    alice = await clients(server.url, make_token("alice", friends=["bob"]))
    ack = await alice.call("presence:query", {"user_ids": ["bob", "carol", "alice"]})
    assert ack["ok"]
    assert sorted(ack["data"]) == ["alice", "bob"]
    assert ack["forbidden"] == ["carol"]

    ack = await alice.call("presence:subscribe", {"user_ids": ["carol", "bob"]})
    assert ack["ok"] and list(ack["data"]) == ["bob"] and ack["forbidden"] == ["carol"]
    assert (await alice.call("presence:unsubscribe", {"user_ids": []}))["data"] == {
        "user_ids": ["bob"]
    }
    # carol comes online first, bob after: bob's update is the sentinel for carol's.
    await clients(server.url, make_token("carol"))
    await clients(server.url, make_token("bob"))
    await eventually(lambda: updates_for(alice, "bob"))
    assert updates_for(alice, "carol") == []

    # Server to server, the API stays unrestricted.
    status, body = await http(
        "POST", server.url + "/api/v1/presence/query", {"user_ids": ["carol"]}
    )
    assert status == 200 and body["data"]["carol"]["online"] is True


async def test_everyone_visibility_answers_as_before(start_server, clients):
    server = start_server()
    alice = await clients(server.url, make_token("alice"))
    ack = await alice.call("presence:query", {"user_ids": ["carol"]})
    assert ack == {
        "ok": True,
        "data": {"carol": {"online": False, "status": "offline", "last_seen": None}},
    }


async def test_a_hook_answers_for_all_ids_or_with_the_allowed_ones():
    config = config_from_dict(base_config())

    def policy(user, action, resource):
        if action != "presence.read":
            return None
        if user.user_id == "mallory":
            return False  # every id denied
        return [i for i in resource if not i.startswith("secret")]

    async with running_app(config, plugins=[inline_plugin("policy", authorize=policy)]) as (
        _app,
        url,
    ):
        ids = {"user_ids": ["secret1", "bob", "secret2"]}
        for user, data, forbidden in (
            ("alice", ["bob"], ["secret1", "secret2"]),
            ("mallory", [], ["secret1", "bob", "secret2"]),
        ):
            client = await Client().connect(url, token(config, user))
            try:
                ack = await client.call("presence:query", ids)
                assert list(ack["data"]) == data and ack["forbidden"] == forbidden
                ack = await client.call("presence:subscribe", ids)
                assert list(ack["data"]) == data and ack["forbidden"] == forbidden
            finally:
                await client.close()
