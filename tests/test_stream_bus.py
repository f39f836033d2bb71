"""The redis-streams cluster bus: Redis outages and config rules.

The python-socketio code it replaces is checked in tests/test_upstream_overrides.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import redis

from sanic_rt.recovery import MemoryEventLog, Session
from tests.support.clients import eventually, http, make_token
from tests.support.cluster import check_config, cluster_config, wire_up

_ids = itertools.count(1)
OUTAGE = 5.0
SEND_INTERVAL = 0.05


def streams_config(redis_proc, **sections):
    config = cluster_config(redis_proc, **sections)
    config["cluster"] = {"manager": "redis-streams", "timeout": 0.5}
    return config


async def test_redis_outage_loses_nothing_acked_and_duplicates_nothing(
    redis_proc, start_server, clients
):
    node_a, node_b = (
        start_server(streams_config(redis_proc)),
        start_server(streams_config(redis_proc)),
    )
    await wire_up(clients, [node_b], [node_a])
    alice = await clients(node_a.url, make_token("alice"))
    bob = await clients(node_b.url, make_token("bob"))  # python-socketio, no recovery
    for client in (alice, bob):
        assert (await client.call("chat:join", {"conversation_id": "c"}))["ok"]
    await both_ways_at_once(alice, bob)
    acks: dict[str, str] = {}  # text -> "ok" or the error code

    async def send() -> str:
        text = f"m{next(_ids)}"
        answer = await alice.call("chat:message", {"conversation_id": "c", "text": text})
        acks[text] = "ok" if answer["ok"] else answer["error"]["code"]
        return text

    for _ in range(10):
        await send()
    redis_proc.stop()
    stopped = time.monotonic()
    while time.monotonic() - stopped < OUTAGE:  # bounded: ~100 messages at most
        await send()
        await _pause()
    redis_proc.start()
    back = time.monotonic()

    async def flows() -> bool:
        return acks[await send()] == "ok"

    await eventually(flows, timeout=10, interval=SEND_INTERVAL)
    first_ok_after = max((t for t, code in acks.items() if code == "ok"), key=_number)
    await eventually(lambda: first_ok_after in texts(bob), timeout=10)
    print(f"new messages delivered {time.monotonic() - back:.2f}s after Redis came back")

    during = [code for text, code in acks.items() if code != "ok"]
    assert during and set(during) == {"unavailable"}, set(during)
    # A last one from A: once it is on B, everything before it is too.
    last = await send()
    await eventually(lambda: last in texts(bob), timeout=10)
    delivered = [t for t in texts(bob) if t.startswith("m")]
    acked = [t for t, code in acks.items() if code == "ok"]
    assert sorted(delivered, key=_number) == delivered  # in order
    assert delivered == acked  # every ok exactly once, no refused one
    assert all(isinstance(m, dict) for m in bob.events("chat:message"))
    assert "Traceback" not in node_a.log() + node_b.log()


async def both_ways_at_once(alice, bob, each: int = 60) -> None:
    """Both nodes emit at once; everything arrives on the other node, once.

    Each node reads the stream from its reader's own position: an entry the other
    node added just before this node's own XADD must not be skipped. (``each``
    stays under the per-connection burst of ``[server] events_burst``.)
    """

    async def burst(client, name: str) -> None:
        for i in range(each):
            text = f"{name}-{i}"
            answer = await client.call("chat:message", {"conversation_id": "c", "text": text})
            assert answer["ok"], answer

    await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
    for client, other in ((alice, "b"), (bob, "a")):
        await eventually(lambda c=client: len(texts(c)) >= each, timeout=15)
        assert texts(client) == [f"{other}-{i}" for i in range(each)]


async def _pause() -> None:
    await asyncio.sleep(SEND_INTERVAL)  # pacing of the load loop, not a wait for state


def texts(client) -> list[str]:
    return [m["text"] for m in client.events("chat:message")]


def _number(text: str) -> int:
    return int(text[1:])


def test_recovery_needs_a_bus_that_keeps_events(tmp_path, redis_proc):
    good = streams_config(redis_proc)
    good["recovery"] = {"enabled": True}
    assert check_config(tmp_path, good).returncode == 0, check_config(tmp_path, good).stderr
    bad = {**good, "cluster": {"manager": "redis"}}
    result = check_config(tmp_path, bad)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "recovery.enabled" in lines[0] and "check.toml" in lines[0]
    workers = streams_config(redis_proc, server={"workers": 2, "transports": ["websocket"]})
    assert check_config(tmp_path, workers).returncode == 0
    targeted = {**good, "cluster": {"manager": "redis-streams", "routing": "targeted"}}
    for config, key in (
        (targeted, "recovery.enabled"),
        ({**targeted, "cluster": {"routing": "targeted"}}, "cluster.routing"),
    ):
        result = check_config(tmp_path, config)
        assert result.returncode == 2 and key in result.stderr, result.stderr


async def test_memory_log_is_bounded_and_says_when_it_lost_events():
    log = MemoryEventLog(max_age=60, max_events=100)
    offsets = [log.append({"method": "emit", "n": i}) for i in range(250)]
    assert len(await log.read_after(offsets[150])) == 99  # only the newest 100 are kept
    assert await log.read_after(offsets[100]) is None  # its successors were dropped
    assert await log.read_after(offsets[-1]) == []
    epoch, seq = offsets[-1].split("-")
    assert await log.read_after(f"{epoch}-{int(seq) + 1}") is None  # from the future
    assert await log.read_after("nonsense") is None

    session = Session("alice", "/chats", "sid1", ["conv:1"], [])
    await log.save_session("pid1", session, ttl=60)
    assert await log.take_session("pid1", "mallory", "/chats") is None  # not hers
    assert await log.take_session("pid1", "alice", "/orders") is None
    assert await log.take_session("pid1", "alice", "/chats") == session
    assert await log.take_session("pid1", "alice", "/chats") is None  # used once
    await log.save_session("pid2", session, ttl=0.0)
    assert await log.take_session("pid2", "alice", "/chats") is None  # expired


def test_replay_starts_where_delivery_had_got_to():
    # A node delivers its own emits at once and other nodes' as its reader gets
    # them: a client's last offset can be ahead of an event still on its way.
    from sanic_rt.recovery import _resume_from

    session = Session("alice", "/chats", "sid1", [], [], offset="5-0", delivered="9-0")
    assert _resume_from(None, session) == "5-0"  # saw no event: from its start
    assert _resume_from("8-3", session) == "8-3"
    assert _resume_from("12-0", session) == "9-0"  # an own emit ahead of the reader
    assert _resume_from("3-7", session) == "5-0"  # from before its start: clamped to it
    assert _resume_from("garbage", session) is None
    assert _resume_from(12, session) is None


async def test_targeted_bus_sends_a_node_only_what_its_connections_need(
    redis_proc, start_server, clients
):
    config = streams_config(redis_proc)
    config["cluster"]["routing"] = "targeted"
    node_a, node_b, node_c = (start_server(config) for _ in range(3))
    alice = await clients(node_a.url, make_token("alice"))
    bob = await clients(node_b.url, make_token("bob"), namespaces=["/chats", "/notifications"])
    carol = await clients(node_c.url, make_token("carol"))  # on C, in no conversation
    for client in (alice, bob):
        assert (await client.call("chat:join", {"conversation_id": "t"}))["ok"]
    bus = redis.Redis(port=redis_proc.port)

    def lengths() -> dict[str, int]:  # the node streams (one appears with its first entry)
        return {k.decode(): bus.xlen(k) for k in bus.keys("sanic_rt:bus:node:*")}

    before = lengths()
    for i in range(20):
        answer = await alice.call("chat:message", {"conversation_id": "t", "text": f"m{i}"})
        assert answer["ok"], answer
    # A notification for bob pushed through C's HTTP API: to B's stream only.
    body = {"user_ids": ["bob"], "type": "t", "title": "hi"}
    status, _ = await http("POST", f"{node_c.url}/api/v1/notifications", body)
    assert status == 200
    await eventually(
        lambda: len(texts(bob)) == 20 and bob.events("notification:new", "/notifications")
    )
    assert texts(bob) == [f"m{i}" for i in range(20)]
    grew = {s: n - before.get(s, 0) for s, n in lengths().items() if n != before.get(s, 0)}
    assert list(grew.values()) == [21], grew  # one stream (B's) got them all, A's and C's none
    assert texts(carol) == []

    # A disconnect asked on A reaches bob's node and only it.
    status, reply = await http("POST", f"{node_a.url}/api/v1/users/bob/disconnect")
    assert status == 200 and reply["data"]["connections"] == 2, reply
    await eventually(lambda: not bob.sio.connected)


async def test_shutdown_stops_the_bus_reader_and_heartbeat(redis_proc, tmp_path):
    from sanic_rt.config import load_config
    from sanic_rt.testing import running_app, to_toml

    for routing in ("broadcast", "targeted"):
        raw = streams_config(redis_proc)
        raw["cluster"]["routing"] = routing
        path = tmp_path / f"{routing}.toml"
        path.write_text(to_toml(raw), encoding="utf-8")
        async with running_app(load_config(path, env={})) as (app, _url):
            manager = app.ctx.gateway.sio.manager
            await eventually(lambda m=manager: getattr(m, "thread", None) is not None)
            tasks = [manager.thread, getattr(manager, "_heartbeat_task", None)]
            assert not any(t.done() for t in tasks if t is not None), routing
        # Left running, both kept polling Redis (and beating) after the app stopped.
        await eventually(lambda ts=tasks: all(t.done() for t in ts if t is not None))
