"""Presence events in one process: the hook, the in-process webhook queue, the Redis stream."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sanic_rt.config import load_config
from sanic_rt.events import presence_event, signature
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence_model import Connection, Timings
from sanic_rt.testing import config_from_dict, inline_plugin, running_app
from tests.conftest import base_config
from tests.support.clients import eventually, make_token
from tests.support.cluster import check_config
from tests.support.metrics import scrape, value
from tests.support.webhooks import WEBHOOK_SECRET, Receiver

DOCS = Path(__file__).resolve().parents[1] / "docs"


async def webhook_counts(url: str) -> dict[str, float]:
    """The webhook series at ``url``/metrics (process-wide: compare before and after)."""
    text = await scrape(url)
    counts = {
        result: value(text, "sanic_rt_webhook_events_total", result=result) or 0.0
        for result in ("delivered", "dropped_4xx", "dropped_queue_full", "failed")
    }
    counts["retries"] = value(text, "sanic_rt_webhook_retries_total") or 0.0
    return counts


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

    async def broken(event: dict) -> None:
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
            before = await webhook_counts(url)
            alice = await clients(url, make_token("alice"))
            await eventually(lambda: receiver.posts >= 3)  # retried while failing
            receiver.status = 200
            await alice.close()
            await eventually(lambda: len(receiver.unique()) == 2)
            stats = app.ctx.events.webhook_stats
            assert stats.retries >= 2 and stats.delivered == 2
            after = await webhook_counts(url)
            assert after["retries"] - before["retries"] == stats.retries
            assert after["delivered"] - before["delivered"] == 2
    finally:
        await receiver.stop()
    assert_signed_online_then_offline(receiver, "alice")


async def test_a_receiver_answering_400_is_dropped_and_counted(clients, caplog):
    receiver = await Receiver().start()
    receiver.status = 400
    config = config_from_dict(base_config(events={"webhook": webhook(receiver)}))
    caplog.set_level(logging.WARNING, "sanic_rt.events")
    try:
        async with running_app(config) as (app, url):
            before = await webhook_counts(url)
            await clients(url, make_token("alice"))
            stats = app.ctx.events.webhook_stats
            await eventually(lambda: stats.rejected == 1)
            assert receiver.posts == 1 and stats.retries == 0
            after = await webhook_counts(url)
            changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            assert changed == {"dropped_4xx": 1}, changed
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
            before = await webhook_counts(url)
            for user in ("u1", "u2", "u3", "u4"):
                await clients(url, make_token(user))
            stats = app.ctx.events.webhook_stats
            # one batch is out being retried; the queue holds the newest two
            await eventually(lambda: stats.queue_dropped == 1)
            assert [e["user_id"] for e in app.ctx.events.queue.queue] == ["u3", "u4"]
            after = await webhook_counts(url)
            assert after["dropped_queue_full"] - before["dropped_queue_full"] == 1
    finally:
        await receiver.stop()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_hanging_receiver_times_out_and_is_retried(clients, backend, request):
    """A POST the receiver never answers ends at ``timeout`` and is retried; once it
    answers, nothing is lost; meanwhile the gateway keeps answering others."""
    receiver = await Receiver().start()
    receiver.hang = True
    sections: dict[str, Any] = {
        "events": {"webhook": webhook(receiver, timeout=0.5, max_attempts=100)}
    }
    if backend == "redis":  # webhooks read the event stream through a consumer group
        url = f"redis://127.0.0.1:{request.getfixturevalue('redis_proc').port}/0"
        sections["presence"] = {"backend": "redis", "redis": {"url": url}}
    config = config_from_dict(base_config(**sections))
    try:
        async with running_app(config) as (_app, url):
            before = await webhook_counts(url)
            alice = await clients(url, make_token("alice"))
            await eventually(lambda: receiver.hung >= 2)  # the first POST timed out
            bystander = await clients(url, make_token("bob"))
            assert (await bystander.call("ping", {}))["ok"]
            await alice.close()
            receiver.hang = False
            await eventually(lambda: "alice" in receiver.by_user())
            await eventually(lambda: len(receiver.by_user()["alice"]) == 2)
            after = await webhook_counts(url)
            assert after["retries"] - before["retries"] >= 1
            assert after["failed"] == before["failed"]
    finally:
        await receiver.stop()
    assert_signed_online_then_offline(receiver, "alice")


def docs_function(name: str) -> Any:
    """A function defined by one of docs/events.md's Python blocks."""
    for block in re.findall(r"```python\n(.*?)```", (DOCS / "events.md").read_text(), re.S):
        if f"def {name}(" in block:
            scope: dict[str, Any] = {}
            exec(block, scope)
            return scope[name]
    raise AssertionError(f"docs/events.md defines no {name}()")


def test_the_docs_signature_check_accepts_ours_and_refuses_tampering_and_replays():
    verify = docs_function("verify")
    body = b'{"events":[]}'
    now = int(time.time())
    assert verify(WEBHOOK_SECRET, signature(WEBHOOK_SECRET, body, now), body)
    assert not verify(WEBHOOK_SECRET, signature(WEBHOOK_SECRET, body, now), body + b" ")
    assert not verify("another-secret", signature(WEBHOOK_SECRET, body, now), body)
    assert not verify(WEBHOOK_SECRET, signature(WEBHOOK_SECRET, body, now - 3600), body)


class _Enough(Exception):
    pass


async def test_redis_stream_holds_each_change_once_and_the_docs_consumer_reads_it(redis_proc):
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
    expected = 12 + 1 + 11  # user-0 went offline by going invisible: no second offline
    consumed: list[tuple[dict, int]] = []

    def handle(event: dict) -> None:
        consumed.append((event, backend.shard(event["user_id"])))
        if len(consumed) == expected:
            raise _Enough

    consumer = asyncio.create_task(
        asyncio.to_thread(docs_function("consume"), url, handle, shards=4)
    )
    r = aioredis.Redis.from_url(url)

    async def groups_exist() -> bool:
        return all([await r.exists(k) and await r.xinfo_groups(k) for k in keys])

    await eventually(groups_exist)
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
    assert len(changes) == expected
    with pytest.raises(_Enough):
        await asyncio.wait_for(consumer, 20)
    events = [e for e, _shard in consumed]
    assert {e["id"]: e for e in events} == {e["id"]: e for e in map(presence_event, changes)}
    assert len(events) == len(changes)
    for key in keys:  # each user's events live in its shard's stream
        shard = keys.index(key)
        entries = await r.xrange(key)
        assert all(backend.shard(json.loads(f[b"event"])["user_id"]) == shard for _i, f in entries)
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


def assert_signed_online_then_offline(receiver: Any, user_id: str) -> None:
    """Every POST was signed, and ``user_id`` came online, then went offline."""
    assert receiver.bad_signatures == 0
    assert [e["type"] for e in receiver.by_user()[user_id]] == [
        "presence.online",
        "presence.offline",
    ]
