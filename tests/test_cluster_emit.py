"""Cross-node emits while the Redis bus is down or stalled: an emit answered
`unavailable` is delivered nowhere by its node, and a retry keeps the message id.

Two real nodes share one real redis-server (presence and the manager). alice and
bob are on node A, carol on node B; all three are in conversation "c".
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.support.clients import eventually, make_token
from tests.support.cluster import cluster_config, wire_up
from tests.support.metrics import scrape, value
from tests.support.procs import Proc

CONVERSATION = {"conversation_id": "c"}


@pytest.fixture
async def room(redis_proc: Proc, start_server, clients) -> dict[str, Any]:
    node_a, node_b = (
        start_server(cluster_config(redis_proc)),
        start_server(cluster_config(redis_proc)),
    )
    await wire_up(clients, [node_a, node_b], [node_a, node_b])
    people = {
        "alice": await clients(node_a.url, make_token("alice")),
        "bob": await clients(node_a.url, make_token("bob")),
        "carol": await clients(node_b.url, make_token("carol")),
    }
    for client in people.values():
        assert (await client.call("chat:join", CONVERSATION))["ok"]
    return {"nodes": (node_a, node_b), **people}


def texts(client: Any) -> list[str]:
    return [m["text"] for m in client.events("chat:message")]


async def send(client: Any, text: str, client_id: str | None = None) -> dict[str, Any]:
    return await client.call(
        "chat:message", {**CONVERSATION, "text": text, "client_id": client_id}, timeout=8
    )


async def delivered_everywhere(room: dict[str, Any], prefix: str) -> str:
    """Send ``prefix-N`` until one reaches bob and carol (each node hears the bus again
    some time after Redis is back); return the text that did."""
    sent: list[str] = []

    async def arrived() -> bool:
        text = f"{prefix}-{len(sent)}"
        if (await send(room["alice"], text))["ok"]:
            sent.append(text)
        try:
            await eventually(lambda: sent and sent[-1] in texts(room["carol"]), timeout=1)
        except AssertionError:
            return False
        return True

    await eventually(arrived, timeout=30, interval=0.1)
    await eventually(lambda: sent[-1] in texts(room["bob"]))
    return sent[-1]


async def test_with_redis_killed_a_message_is_unavailable_and_delivered_nowhere(
    room, redis_proc
) -> None:
    redis_proc.kill()
    ack = await send(room["alice"], "lost")
    assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    # The sender's node counts the failed publish (docs/operations.md).
    sender = room["nodes"][0]
    assert (value(await scrape(sender.url), "sanic_rt_cluster_emit_errors_total") or 0) >= 1
    redis_proc.start()
    # Once the bus is back, a later message reaches both; nobody ever got "lost"
    # (bob is on the sender's node, where it used to be delivered before the publish).
    await delivered_everywhere(room, "after")
    assert "lost" not in texts(room["bob"]) + texts(room["carol"])
    assert texts(room["bob"])[0].startswith("after")
    for node in room["nodes"]:
        assert "Traceback" not in node.log()


async def test_with_redis_stalled_a_retry_keeps_the_message_id(room, redis_proc) -> None:
    redis_proc.signal(signal.SIGSTOP)
    try:
        ack = await send(room["alice"], "hello", client_id="k1")
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    finally:
        redis_proc.signal(signal.SIGCONT)
    # The stalled PUBLISH may still reach node B (carol) after the deadline; the
    # sender's own node delivered nothing. The client retries with its client_id.
    retry = await eventually(lambda: _acked(send(room["alice"], "hello", client_id="k1")), 20)
    await eventually(lambda: "hello" in texts(room["bob"]) and "hello" in texts(room["carol"]))
    await delivered_everywhere(room, "sentinel")  # everything earlier has arrived
    assert texts(room["bob"])[0] == "hello" and texts(room["bob"]).count("hello") == 1
    carol_copies = [m for m in room["carol"].events("chat:message") if m["client_id"] == "k1"]
    assert 1 <= len(carol_copies) <= 2
    assert {m["id"] for m in carol_copies} == {retry["data"]["id"]}
    bob_copy = room["bob"].events("chat:message")[0]
    assert bob_copy["id"] == retry["data"]["id"]


async def _acked(call: Any) -> dict[str, Any] | None:
    ack = await call
    return ack if ack["ok"] else None


async def test_a_client_id_gives_the_same_id_on_every_node_and_retry(room) -> None:
    first = await send(room["alice"], "one", client_id="same")
    again = await send(room["alice"], "one", client_id="same")
    other = await send(room["alice"], "two", client_id="other")
    plain = [await send(room["alice"], "three") for _ in range(2)]
    assert first["data"]["id"] == again["data"]["id"] != other["data"]["id"]
    assert plain[0]["data"]["id"] != plain[1]["data"]["id"]  # no client_id: random ids
    # Another sender's message with the same client_id has its own id.
    bobs = await send(room["bob"], "one", client_id="same")
    assert bobs["data"]["id"] != first["data"]["id"]
    await eventually(lambda: len(texts(room["carol"])) == 6)
    assert [m["id"] for m in room["carol"].events("chat:message")[:2]] == [first["data"]["id"]] * 2
