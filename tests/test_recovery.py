"""Connection state recovery with the official socket.io-client against real servers.

Two nodes on ``[cluster] manager = "redis-streams"`` share one real redis-server
(started once for the module); single-process nodes keep missed events in memory.
The issue's 130 s "beyond the window" case runs here at the scale of a 3 s
``max_disconnection``.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token
from tests.support.cluster import updates_for
from tests.support.js import JsClient, needs_node
from tests.support.procs import Proc, redis_process, server_process

pytestmark = needs_node
_ids = itertools.count(1)
#: long enough that a recovered reconnect never announces offline (and a test proves it)
GRACE = 20.0
WINDOW = 30.0


def recovery_config(redis: Proc | None, window: float = WINDOW) -> dict[str, Any]:
    presence: dict[str, Any] = {"offline_grace": GRACE}
    cluster: dict[str, Any] = {}
    if redis is not None:
        url = f"redis://127.0.0.1:{redis.port}/0"
        presence |= {"backend": "redis", "redis": {"url": url}}
        cluster = {"manager": "redis-streams"}
    return base_config(
        presence=presence,
        cluster=cluster,
        recovery={"enabled": True, "max_disconnection": window},
    )


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    """redis-server and two nodes on the redis-streams bus, once for the module."""
    tmp = tmp_path_factory.mktemp("streams")
    redis = redis_process(tmp).start()
    nodes = [server_process(tmp, recovery_config(redis)).start() for _ in range(2)]
    yield {"redis": redis, "a": nodes[0], "b": nodes[1]}
    for proc in (*nodes, redis):
        proc.stop()


@pytest.fixture
async def js() -> Any:
    made: list[JsClient] = []

    async def start(url: str, user_id: str) -> JsClient:
        client = await JsClient().start(url, make_token(user_id))
        made.append(client)
        return client

    yield start
    for client in made:
        await client.close()


async def connected(client: JsClient, count: int) -> list[dict[str, Any]]:
    """Wait for the ``count``-th pair of connects (/chats and /notifications)."""
    await eventually(lambda: len(client.seen("connect")) >= 2 * count, timeout=20)
    return client.seen("connect")[2 * (count - 1) : 2 * count]


async def ack(client: JsClient, command: str) -> Any:
    tag = f"k{next(_ids)}"
    await client.send(command.replace("{id}", tag))
    line = await eventually(lambda: [x for x in client.seen("ack") if x["id"] == tag], timeout=20)
    return line[0]["ack"]


async def offline(node: Proc, user_id: str) -> None:
    """Wait until ``node`` has handled the drop (the session is kept by then)."""

    async def gone() -> bool:
        status, body = await http("GET", f"{node.url}/api/v1/presence/{user_id}")
        return status == 200 and body["data"]["connections"] == 0

    await eventually(gone, timeout=20)


async def drop(client: JsClient, node: Proc, user_id: str) -> None:
    await client.send("close")
    await eventually(lambda: len(client.seen("disconnect")) >= 2, timeout=20)
    await offline(node, user_id)


async def send_missed(sender: Client, node: Proc, conversation: str, user_id: str) -> list[str]:
    """5 chat messages and 2 HTTP notifications; returns what was sent, in order."""
    sent = []
    for i in range(5):
        text = f"m{i}-{uuid.uuid4().hex[:6]}"
        answer = await sender.call("chat:message", {"conversation_id": conversation, "text": text})
        assert answer["ok"], answer
        sent.append(text)
        if i in (1, 3):
            title = f"n{i}-{uuid.uuid4().hex[:6]}"
            body = {"user_ids": [user_id], "type": "t", "title": title}
            status, reply = await http("POST", f"{node.url}/api/v1/notifications", body)
            assert status == 200, reply
            sent.append(title)
    return sent


def dave_updates(client: JsClient, user_id: str) -> list[list[Any]]:
    updates = client.event_args("presence:update", "/chats")
    return [u for u in updates if u[0]["user_id"] == user_id]


def received(client: JsClient) -> tuple[list[str], list[str]]:
    """(chat texts, notification titles) in arrival order; each event ends in a string offset."""
    chats = client.event_args("chat:message", "/chats")
    notes = client.event_args("notification:new", "/notifications")
    for args in chats + notes:
        assert len(args) == 2 and isinstance(args[1], str) and re.match(r"^\d+-\d+$", args[1])
    return [a[0]["text"] for a in chats], [a[0]["title"] for a in notes]


async def join_both(alice: JsClient, bob: Client, conversation: str) -> None:
    assert (await ack(alice, f"join {{id}} {conversation}"))["ok"]
    assert (await bob.call("chat:join", {"conversation_id": conversation}))["ok"]


async def check_recovery(
    js: Any, clients: Any, first: Proc, second: Proc, watch: Proc, api: Proc
) -> None:
    """The issue's scenario: connect to ``first``, drop, miss 7 events, reconnect to ``second``."""
    alice_id, conversation = f"alice-{next(_ids)}", f"c{next(_ids)}"
    carol = await clients(watch.url, make_token(f"carol-{next(_ids)}"))
    await carol.call("presence:subscribe", {"user_ids": [alice_id]})
    alice = await js(first.url, alice_id)
    assert [c["recovered"] for c in await connected(alice, 1)] == [False, False]
    await eventually(lambda: updates_for(carol, alice_id))
    # bob: a python-socketio client in the same room all along, without recovery.
    bob = await clients(second.url, make_token(f"bob-{next(_ids)}"))
    await join_both(alice, bob, conversation)
    dave_id = f"dave-{next(_ids)}"
    subscribe = json.dumps({"user_ids": [dave_id]}, separators=(",", ":"))
    assert (await ack(alice, f"call {{id}} presence:subscribe {subscribe}"))["ok"]

    await drop(alice, first, alice_id)
    sent = await send_missed(bob, api, conversation, alice_id)
    dave = await clients(api.url, make_token(dave_id))  # a presence change alice misses
    await alice.send(f"reconnect {second.url}")
    assert [c["recovered"] for c in await connected(alice, 2)] == [True, True]

    texts = [s for s in sent if s.startswith("m")]
    titles = [s for s in sent if s.startswith("n")]
    await eventually(lambda: received(alice) == (texts, titles))
    # Something new after the recovery comes after the missed ones, and once.
    answer = await bob.call("chat:message", {"conversation_id": conversation, "text": "after"})
    assert answer["ok"], answer
    await eventually(lambda: received(alice)[0][-1:] == ["after"])
    assert received(alice) == ([*texts, "after"], titles)
    # Her presence subscription is back: the missed update came, and new ones do.
    assert [u[0]["online"] for u in dave_updates(alice, dave_id)] == [True]
    assert (await dave.call("presence:set_status", {"status": "dnd"}))["ok"]
    await eventually(lambda: len(dave_updates(alice, dave_id)) == 2)
    assert dave_updates(alice, dave_id)[1][0]["status"] == "dnd"
    # Presence did not flap: carol saw alice online once, never offline.
    assert [u["online"] for u in updates_for(carol, alice_id)] == [True]
    # bob's events are exactly what a client without recovery always got: the payload.
    for message in bob.events("chat:message"):
        assert isinstance(message, dict) and message["sender_id"].startswith("bob-")


async def test_recovered_on_the_same_node_single_process(js, clients, start_server):
    node = start_server(recovery_config(None))
    await check_recovery(js, clients, node, node, node, node)


async def test_recovered_on_the_same_node_over_streams(js, clients, streams):
    a, b = streams["a"], streams["b"]
    await check_recovery(js, clients, a, a, b, b)


async def test_recovered_on_the_other_node(js, clients, streams):
    a, b = streams["a"], streams["b"]
    await check_recovery(js, clients, a, b, b, a)


async def test_beyond_the_window_is_a_fresh_connection(js, clients, start_server, streams):
    # A node on the same bus with a 3 s window: its sessions expire in Redis.
    short = start_server(recovery_config(streams["redis"], window=3.0))
    alice_id, conversation = f"alice-{next(_ids)}", f"c{next(_ids)}"
    alice = await js(short.url, alice_id)
    pid = (await connected(alice, 1))[0]["pid"]
    bob = await clients(short.url, make_token(f"bob-{next(_ids)}"))
    await join_both(alice, bob, conversation)
    await drop(alice, short, alice_id)
    await bob.call("chat:message", {"conversation_id": conversation, "text": "missed"})
    bus = redis.Redis(port=streams["redis"].port)
    assert bus.exists(f"sanic_rt:session:{pid}")
    await eventually(lambda: not bus.exists(f"sanic_rt:session:{pid}"), timeout=10)
    await alice.send("reconnect")
    assert [c["recovered"] for c in await connected(alice, 2)] == [False, False]
    # A fresh connection: not in the conversation, nothing replayed.
    assert received(alice) == ([], [])
    assert (await ack(alice, f"join {{id}} {conversation}"))["ok"]


async def test_forged_pid_or_offset_is_a_fresh_connection_and_leaks_nothing(js, clients, streams):
    node = streams["a"]
    alice_id, conversation = f"alice-{next(_ids)}", f"c{next(_ids)}"
    alice = await js(node.url, alice_id)
    await connected(alice, 1)
    bob = await clients(node.url, make_token(f"bob-{next(_ids)}"))
    await join_both(alice, bob, conversation)
    await bob.call("chat:message", {"conversation_id": conversation, "text": "before"})
    await eventually(lambda: received(alice)[0] == ["before"])
    pid, offset = (
        alice.seen("connect", "/chats")[-1]["pid"],
        alice.event_args("chat:message", "/chats")[-1][1],
    )
    await drop(alice, node, alice_id)
    await bob.call("chat:message", {"conversation_id": conversation, "text": "secret"})

    # mallory presents alice's pid and offset with her own (valid) token, then a random one.
    mallory_id = f"mallory-{next(_ids)}"
    mallory = await js(node.url, mallory_id)
    await connected(mallory, 1)
    for round_, forged in enumerate([pid, uuid.uuid4().hex], start=2):
        await drop(mallory, node, mallory_id)
        await mallory.send(f"forge {forged} {offset}")
        await mallory.send("reconnect")
        # (her /notifications connection, not forged, recovers its own session)
        (fresh,) = [c for c in await connected(mallory, round_) if c["nsp"] == "/chats"]
        assert not fresh["recovered"] and fresh["pid"] not in (pid, forged)
    await bob.call("chat:message", {"conversation_id": conversation, "text": "secret again"})
    status, _ = await http(
        "POST",
        f"{node.url}/api/v1/notifications",
        {"user_ids": [mallory_id], "type": "t", "title": "end"},
    )
    assert status == 200
    await eventually(lambda: received(mallory)[1] == ["end"])
    assert received(mallory)[0] == []

    # alice's session was neither leaked nor spent: she recovers it.
    await alice.send("reconnect")
    assert [c["recovered"] for c in await connected(alice, 2)] == [True, True]
    await eventually(lambda: received(alice)[0] == ["before", "secret", "secret again"])

    # Her own pid with an offset that is malformed, in the future or huge: fresh.
    bad_offsets = ["abc", "99999999999999-0", "1-" + "9" * 10_000]
    for round_, bad in enumerate(bad_offsets, start=3):
        own_pid = alice.seen("connect", "/chats")[-1]["pid"]
        await drop(alice, node, alice_id)
        await alice.send(f"forge {own_pid} {bad}")
        await alice.send("reconnect")
        (fresh,) = [c for c in await connected(alice, round_) if c["nsp"] == "/chats"]
        assert not fresh["recovered"]
    assert "Traceback" not in node.log()


async def test_a_drained_node_loses_its_clients_no_events(js, clients, start_server, streams):
    # SIGTERM closes transports; the sessions are kept, and the clients recover on
    # another node (a rolling restart behind a load balancer).
    leaving = start_server(recovery_config(streams["redis"]))
    alice_id, conversation = f"alice-{next(_ids)}", f"c{next(_ids)}"
    alice = await js(leaving.url, alice_id)
    await connected(alice, 1)
    bob = await clients(streams["b"].url, make_token(f"bob-{next(_ids)}"))
    await join_both(alice, bob, conversation)
    leaving.signal(signal.SIGTERM)
    await eventually(lambda: not leaving.alive, timeout=20)
    await bob.call("chat:message", {"conversation_id": conversation, "text": "while moving"})
    await alice.send(f"reconnect {streams['b'].url}")
    assert [c["recovered"] for c in await connected(alice, 2)] == [True, True]
    await eventually(lambda: received(alice)[0] == ["while moving"])
