"""Time-driven presence over the real server: idle away, server-side refresh, crash expiry."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import base_config
from tests.support.clients import eventually, make_token


def updates_for(client, user_id: str) -> list[tuple[bool, str]]:
    return [
        (u["online"], u["status"])
        for u in client.events("presence:update")
        if u["user_id"] == user_id
    ]


async def test_idle_user_turns_away_and_activity_brings_them_back(start_server, clients):
    server = start_server(base_config(presence={"idle_timeout": 1}))
    bob = await clients(server.url, make_token("bob"))
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    alice = await clients(server.url, make_token("alice"))
    await eventually(lambda: updates_for(bob, "alice") == [(True, "online"), (True, "away")])
    assert (await alice.call("ping", {})) == {"ok": True, "data": {"status": "online"}}
    await eventually(lambda: updates_for(bob, "alice")[-1] == (True, "online"))


async def test_server_refreshes_connections_without_client_pings(start_server, clients):
    ttl = 1.5
    server = start_server(base_config(presence={"ttl": ttl, "sweep_interval": 0.1}))
    bob = await clients(server.url, make_token("bob"))
    await bob.call("presence:subscribe", {"user_ids": ["alice"]})
    await clients(server.url, make_token("alice"))  # never pings
    await eventually(lambda: updates_for(bob, "alice") == [(True, "online")])
    # The property is about elapsed time: alice must outlive several ttls.
    deadline = time.monotonic() + 3 * ttl
    while time.monotonic() < deadline:
        assert updates_for(bob, "alice") == [(True, "online")]
        await asyncio.sleep(0.1)
    record = await bob.call("presence:query", {"user_ids": ["alice"]})
    assert record["data"]["alice"]["online"] is True
