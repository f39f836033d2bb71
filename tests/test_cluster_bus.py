"""A stalled message bus answers `unavailable` quickly instead of holding the connection."""

from __future__ import annotations

import signal

from tests.conftest import base_config
from tests.support.clients import eventually, make_token


async def test_stalled_redis_bus_answers_unavailable_and_recovers(
    redis_proc, memcached_proc, start_server, clients
):
    config = base_config(
        presence={"backend": "memcached", "memcached": {"servers": [memcached_proc.url[7:]]}},
        cluster={"manager": "redis", "url": f"redis://127.0.0.1:{redis_proc.port}/0"},
    )
    server = start_server(config)
    alice = await clients(server.url, make_token("alice"))
    bob = await clients(server.url, make_token("bob"))
    for client in (alice, bob):
        assert (await client.call("chat:join", {"conversation_id": "c1"}))["ok"]
    message = {"conversation_id": "c1", "text": "hello"}
    assert (await alice.call("chat:message", message))["ok"]
    await eventually(lambda: bob.events("chat:message"))

    redis_proc.signal(signal.SIGSTOP)
    try:
        ack = await alice.call("chat:message", message, timeout=8)
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
        # The connection is not held behind the stuck publish: presence still answers.
        assert (await alice.call("presence:query", {"user_ids": ["bob"]}))["ok"]
        # A newcomer is admitted: its online is stored, only the announcement is lost.
        carol = await clients(server.url, make_token("carol"))
        assert (await carol.call("ping", {}))["ok"]
    finally:
        redis_proc.signal(signal.SIGCONT)

    async def delivered_again() -> bool:
        before = len(bob.events("chat:message"))
        ack = await alice.call("chat:message", message)
        return ack["ok"] and await _arrives(bob, before)

    await eventually(delivered_again, timeout=20, interval=0.5)
    assert "Traceback" not in server.log()


async def _arrives(client, count: int) -> bool:
    try:
        await eventually(lambda: len(client.events("chat:message")) > count, timeout=2)
    except AssertionError:
        return False
    return True
