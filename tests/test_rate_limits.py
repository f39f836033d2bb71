"""Issue 11, finding 8: events are charged by cost, and each user has one budget per node."""

from __future__ import annotations

import asyncio
import time

from sanic_rt.ratelimit import IDS_PER_TOKEN, TokenBucket, event_cost
from tests.conftest import base_config
from tests.support.clients import make_token

QUERY = {"user_ids": [f"u{i}" for i in range(500)]}
QUERIES_PER_CONNECTION = 12


def test_a_query_costs_by_its_ids_and_at_most_the_burst():
    assert event_cost("ping", {}) == 1
    assert event_cost("presence:query", QUERY) == 1 + 500 // IDS_PER_TOKEN
    assert event_cost("presence:subscribe", {"user_ids": ["a"]}) == 2
    assert event_cost("presence:query", {"user_ids": "nope"}) == 1
    bucket = TokenBucket(rate=0.1, burst=10)
    assert bucket.take(1000)  # the largest request fits a full bucket...
    assert not bucket.take(1000)  # ...once


async def test_one_users_connections_share_a_budget_and_others_are_served(start_server, clients):
    server = start_server(base_config())  # the default limits
    hammers = [
        await clients(server.url, make_token("mallory"), namespaces=[ns])
        for ns in ("/chats", "/chats", "/orders", "/orders", "/notifications")
    ]
    bystander = await clients(server.url, make_token("bob"))
    pings: list[float] = []
    answers: list[str] = []
    done = asyncio.Event()

    async def hammer(client) -> None:
        namespace = next(iter(client.sio.namespaces))
        for _ in range(QUERIES_PER_CONNECTION):
            ack = await client.call("presence:query", QUERY, namespace=namespace)
            answers.append("ok" if ack["ok"] else ack["error"]["code"])

    async def ping() -> None:
        while not done.is_set():
            started = time.monotonic()
            ack = await bystander.call("ping", {})
            pings.append(time.monotonic() - started)
            assert ack["ok"], ack

    pinger = asyncio.create_task(ping())
    started = time.monotonic()
    await asyncio.gather(*(hammer(c) for c in hammers))
    elapsed = time.monotonic() - started
    done.set()
    await pinger
    assert set(answers) <= {"ok", "rate_limited"}
    # The user's bucket: burst 200 + 100/s, each query costs 26 tokens.
    cost = event_cost("presence:query", QUERY)
    allowed = (200 + 100 * elapsed) / cost + 1
    assert answers.count("ok") <= allowed, (answers.count("ok"), allowed)
    assert answers.count("rate_limited") > 0
    assert pings, "the bystander was never answered"
    print(f"bystander pings: {len(pings)}, slowest {max(pings) * 1000:.1f} ms")
