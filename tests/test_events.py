"""Presence events in one process: the hook, the in-process webhook queue, the Redis stream."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis.asyncio as aioredis

from sanic_rt.config import load_config
from sanic_rt.events import presence_event
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence_model import Connection, Timings
from sanic_rt.testing import config_from_dict, inline_plugin, running_app
from tests.conftest import base_config
from tests.support.clients import eventually, make_token
from tests.support.cluster import check_config
from tests.support.webhooks import WEBHOOK_SECRET, Receiver


def webhook(receiver: Receiver, **extra: object) -> dict[str, object]:
    return {
        "url": receiver.url,
        "secret": WEBHOOK_SECRET,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.2,
        "timeout": 2,
        **extra,
    }


async def test_hook_gets_each_change_once_and_a_raising_plugin_breaks_nothing(clients, caplog):
    seen: list[dict] = []

    def record(event: dict) -> None:
        seen.append(event)

    def broken(event: dict) -> None:
        raise RuntimeError("plugin bug")

    plugins = [
        inline_plugin("recorder", presence_changed=record),
        inline_plugin("broken", presence_changed=broken),
    ]
    async with running_app(config_from_dict(base_config()), plugins=plugins) as (_app, url):
        alice = await clients(url, make_token("alice"))
        assert (await alice.call("presence:set_status", {"status": "dnd"}))["ok"]
        await eventually(lambda: len(seen) == 2)
        await alice.close()
        await eventually(lambda: len(seen) == 3)
        bob = await clients(url, make_token("bob"))  # presence still works
        assert (await bob.call("ping", {}))["ok"]
    assert [(e["type"], e["user_id"], e["status"]) for e in seen] == [
        ("presence.online", "alice", "online"),
        ("presence.status", "alice", "dnd"),
        ("presence.offline", "alice", "offline"),
        ("presence.online", "bob", "online"),
    ]
    alice_seqs = [e["seq"] for e in seen if e["user_id"] == "alice"]
    assert alice_seqs == sorted(set(alice_seqs))
    assert len({e["id"] for e in seen}) == 4
    assert "plugin 'broken' failed in presence_changed" in caplog.text


async def test_in_process_webhook_is_signed_retried_and_honours_retry_after(clients):
    receiver = await Receiver().start()
    receiver.status, receiver.retry_after = 503, "0"
    config = config_from_dict(base_config(events={"webhook": webhook(receiver)}))
    try:
        async with running_app(config) as (app, url):
            alice = await clients(url, make_token("alice"))
            await eventually(lambda: receiver.posts >= 3)  # retried while failing
            receiver.status = 200
            await alice.close()
            await eventually(lambda: len(receiver.unique()) == 2)
            stats = app.ctx.events.webhook_stats
            assert stats.retries >= 2 and stats.delivered == 2
    finally:
        await receiver.stop()
    assert receiver.bad_signatures == 0
    assert [e["type"] for e in receiver.by_user()["alice"]] == [
        "presence.online",
        "presence.offline",
    ]


async def test_a_receiver_answering_400_is_dropped_and_counted(clients, caplog):
    receiver = await Receiver().start()
    receiver.status = 400
    config = config_from_dict(base_config(events={"webhook": webhook(receiver)}))
    caplog.set_level(logging.WARNING, "sanic_rt.events")
    try:
        async with running_app(config) as (app, url):
            await clients(url, make_token("alice"))
            stats = app.ctx.events.webhook_stats
            await eventually(lambda: stats.rejected == 1)
            assert receiver.posts == 1 and stats.retries == 0
    finally:
        await receiver.stop()
    assert "rejected 1 events: HTTP 400" in caplog.text


async def test_a_full_in_process_queue_drops_the_oldest_and_counts(clients):
    receiver = await Receiver().start()
    receiver.status = 503  # nothing leaves the queue
    hook = webhook(receiver, queue_max=2, batch_max=1, retry_backoff=5, retry_backoff_max=5)
    config = config_from_dict(base_config(events={"webhook": hook}))
    try:
        async with running_app(config) as (app, url):
            for user in ("u1", "u2", "u3", "u4"):
                await clients(url, make_token(user))
            stats = app.ctx.events.webhook_stats
            # one batch is out being retried; the queue holds the newest two
            await eventually(lambda: stats.queue_dropped == 1)
            assert [e["user_id"] for e in app.ctx.events.queue.queue] == ["u3", "u4"]
    finally:
        await receiver.stop()


async def test_redis_stream_holds_the_changes_and_a_consumer_group_reads_it(redis_proc):
    """The Lua script's events equal the Python ones, sharded, one per change."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    config = load_config(
        env={},
        overrides={
            "presence.backend": "redis",
            "presence.redis.url": url,
            "presence.redis.index_shards": 4,
            "events.stream.enabled": True,
        },
    )
    host = PluginHost(config)
    host.load()
    backend = host.backends()["redis"](config, Timings(ttl=10, offline_grace=1))
    keys = backend.event_stream_keys()
    assert keys == [f"sanic_rt:events:{{sanic_rt:{s}}}" for s in range(4)]
    # A group created before the changes, as docs/events.md does it.
    r = aioredis.Redis.from_url(url)
    for key in keys:
        await r.xgroup_create(key, "app", id="$", mkstream=True)
    t0 = time.time()
    changes = []
    users = [f"user-{i}" for i in range(12)]
    for i, user in enumerate(users):
        changes += (await backend.connect(Connection(user, f"s{i}", "/chats"), t0, 5)).changes
    changes += (await backend.set_status("user-0", "invisible", t0 + 0.5))[1]
    for i, user in enumerate(users):
        changes += (await backend.disconnect(user, f"s{i}", t0 + 1)).changes
    changes += await backend.settle(users, t0 + 2.5)
    await backend.close()
    assert len(changes) == 12 + 1 + 11  # user-0 went offline when invisible: no second one

    read = await r.xreadgroup("app", "me", dict.fromkeys(keys, ">"), count=100)
    stream_events = [json.loads(f[b"event"]) for _key, entries in read for _id, f in entries]
    assert {e["id"]: e for e in stream_events} == {e["id"]: e for e in map(presence_event, changes)}
    assert len(stream_events) == len(changes)
    for key, entries in read:  # each user's events live in its shard's stream
        shard = int(key.decode().rsplit(":", 1)[1].rstrip("}"))
        assert {backend.shard(json.loads(f[b"event"])["user_id"]) for _i, f in entries} == {shard}
    await r.aclose()


@pytest.mark.parametrize(
    ("events", "extra", "key"),
    [
        ({"webhook": {"url": "ftp://example.com/x", "secret": "s"}}, {}, "events.webhook.url"),
        (
            {"webhook": {"url": "https://example.com/x", "secret": "short"}},
            {"server": {"mode": "production"}},
            "events.webhook.secret",
        ),
        ({"stream": {"enabled": True}}, {}, "events.stream.enabled"),
    ],
)
def test_bad_events_config_exits_2_with_one_line(tmp_path, events, extra, key):
    config = base_config(events=events)
    for section, table in extra.items():
        config[section] = {**config[section], **table}
    result = check_config(tmp_path, config)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and key in result.stderr
