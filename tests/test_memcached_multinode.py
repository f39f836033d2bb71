"""Two server processes with presence in one real memcached and Redis as the message bus."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import base_config
from tests.support.clients import eventually, make_token
from tests.support.cluster import SWEEP, TTL, check_config, hears, record_of, sentinel, updates_for
from tests.support.procs import Proc


def memcached_cluster_config(memcached: Proc, redis: Proc, **sections: Any) -> dict[str, Any]:
    """base_config() with presence in memcached and the Redis manager between nodes."""
    presence = {
        "ttl": TTL,
        "sweep_interval": SWEEP,
        "backend": "memcached",
        "memcached": {"servers": [f"127.0.0.1:{memcached.port}"]},
    }
    return base_config(
        presence=presence | sections.pop("presence", {}),
        cluster={"manager": "redis", "url": f"redis://127.0.0.1:{redis.port}/0"},
        **sections,
    )


async def test_sigkill_of_one_node(memcached_proc, redis_proc, start_server, clients):
    config = memcached_cluster_config(memcached_proc, redis_proc)
    node_a, node_b = start_server(config), start_server(config)
    await hears(clients, node_b, node_a)
    watcher = await clients(node_b.url, make_token("watcher"))
    await watcher.call("presence:subscribe", {"user_ids": ["alice", "carol"]})
    await clients(node_a.url, make_token("alice"))
    alice_b = await clients(node_b.url, make_token("alice"), namespaces=["/orders"])
    await clients(node_a.url, make_token("carol"))  # only on the node that dies
    await eventually(lambda: updates_for(watcher, "alice") and updates_for(watcher, "carol"))
    assert (await record_of(node_b, "alice"))["connections"] == 2

    node_a.kill()
    killed_at = time.monotonic()
    # carol's only entry expires ttl after node A's last refresh; node B's
    # sweeper announces it, once.
    await eventually(lambda: len(updates_for(watcher, "carol")) == 2, timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + SWEEP + 1.5
    # alice stays online on her node B connection.
    alice = await record_of(node_b, "alice")
    assert alice["online"] and alice["connections"] == 1 and alice["namespaces"] == ["/orders"]
    assert [u["online"] for u in updates_for(watcher, "alice")] == [True]

    await alice_b.close()
    closed_at = time.monotonic()
    await eventually(lambda: len(updates_for(watcher, "alice")) == 2, timeout=TTL + 5)
    assert time.monotonic() - closed_at <= TTL + SWEEP + 1.5
    # Nothing more: a later change has arrived, and still exactly one offline each.
    await sentinel(clients, node_b, watcher)
    assert [u["online"] for u in updates_for(watcher, "alice")] == [True, False]
    assert [u["online"] for u in updates_for(watcher, "carol")] == [True, False]
    assert isinstance(updates_for(watcher, "alice")[1]["last_seen"], float)
    assert not (await record_of(node_b, "alice"))["online"]
    assert "Traceback" not in node_b.log()


def test_check_config_memcached_presence_needs_redis_as_bus(tmp_path, memcached_proc, redis_proc):
    good = memcached_cluster_config(memcached_proc, redis_proc)
    result = check_config(tmp_path, good)
    assert result.returncode == 0, result.stderr
    bad = {**good, "cluster": {"manager": "memcached"}}
    result = check_config(tmp_path, bad)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cluster.manager" in lines[0] and '"redis"' in lines[0], lines
    assert "Traceback" not in result.stderr
    # A malformed server address is refused the same way, naming the key.
    result = check_config(
        tmp_path,
        {**good, "presence": {**good["presence"], "memcached": {"servers": ["nohost"]}}},
    )
    assert result.returncode == 2 and "presence.memcached.servers" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
