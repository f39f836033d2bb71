"""The streams bus and webhooks through real servers on Sentinel and Redis Cluster URLs.

One Cluster and one Sentinel setup for the module; every test uses its own key
prefix and channel, so they share the topologies without seeing each other.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.conftest import base_config
from tests.support import topologies
from tests.support.clients import eventually, make_token
from tests.support.procs import HOST, Proc
from tests.support.webhooks import WEBHOOK_SECRET, Receiver

# the module-scoped topologies of tests/support, one of each for this module
cluster_setup = topologies.cluster_setup
sentinel_setup = topologies.sentinel_setup
_prefixes = itertools.count(1)


@pytest.fixture
async def receiver() -> Any:
    made = await Receiver().start()
    yield made
    await made.stop()


def streams_config(url: str, **sections: Any) -> dict[str, Any]:
    """Presence and the ``redis-streams`` bus on one Redis URL, under a fresh prefix."""
    prefix = f"bus{next(_prefixes)}"
    presence = {"backend": "redis", "redis": {"url": url, "key_prefix": prefix}}
    cluster = {"manager": "redis-streams", "channel": prefix}
    return base_config(presence=presence, cluster=cluster, **sections)


async def chat_crosses_nodes(clients: Any, a: Proc, b: Proc) -> tuple[Any, Any]:
    """A chat:message sent on ``a`` reaches a member of the conversation on ``b``."""
    alice = await clients(a.url, make_token("alice"))
    bob = await clients(b.url, make_token("bob"))
    for client in (alice, bob):
        assert (await client.call("chat:join", {"conversation_id": "c1"}))["ok"]
    sent = 0

    async def delivered() -> bool:
        # Until b's reader has started, a message may land before its read position.
        nonlocal sent
        sent += 1
        ack = await alice.call("chat:message", {"conversation_id": "c1", "text": f"m{sent}"})
        assert ack["ok"], ack
        try:
            await eventually(lambda: bob.events("chat:message"), timeout=1)
        except AssertionError:
            return False
        return True

    await eventually(delivered, timeout=20)
    texts = [m["text"] for m in bob.events("chat:message")]
    assert texts and set(texts) <= {f"m{i}" for i in range(1, sent + 1)}
    assert len(texts) == len(set(texts)), texts  # nothing twice
    for node in (a, b):
        assert "Traceback" not in node.log()
    return alice, bob


async def test_streams_bus_on_a_cluster_url_delivers_across_nodes(
    cluster_setup, start_server, clients
):
    config = streams_config(cluster_setup.url())
    a, b = start_server(config), start_server(config)
    alice, bob = await chat_crosses_nodes(clients, a, b)

    # The bus stream's master hands its slots to its replica: the readers follow.
    stream = f"{config['cluster']['channel']}:bus"
    master = cluster_setup.master_of_slot(cluster_setup.keyslot(stream))
    cluster_setup.failover_to(cluster_setup.replica_of(master))
    await _arrives_after_failover(alice, bob)
    for node in (a, b):
        assert "Traceback" not in node.log()


async def _arrives_after_failover(alice: Any, bob: Any) -> None:
    before = len(bob.events("chat:message"))

    async def delivered() -> bool:
        ack = await alice.call("chat:message", {"conversation_id": "c1", "text": "after"})
        if not ack["ok"]:  # an emit during the switch answers unavailable
            assert ack["error"]["code"] == "unavailable", ack
            return False
        await eventually(lambda: len(bob.events("chat:message")) > before, timeout=5)
        return True

    await eventually(delivered, timeout=20)


async def test_streams_bus_on_a_sentinel_url_delivers_across_nodes(
    sentinel_setup, start_server, clients
):
    config = streams_config(sentinel_setup.url())
    a, b = start_server(config), start_server(config)
    await chat_crosses_nodes(clients, a, b)


async def test_webhooks_with_the_backend_on_a_cluster(
    cluster_setup, receiver, start_server, clients
):
    webhook = {"url": receiver.url, "secret": WEBHOOK_SECRET, "retry_backoff": 0.05}
    config = streams_config(cluster_setup.url(), events={"webhook": webhook})
    node = start_server(config)
    # enough users for every one of the 16 shard streams, so every master's
    users = [f"hooked-{i}" for i in range(60)]
    for user in users:
        await clients(node.url, make_token(user))

    def all_online() -> bool:
        got = receiver.by_user()
        return all(any(e["type"] == "presence.online" for e in got.get(u, [])) for u in users)

    await eventually(all_online, timeout=20)
    assert receiver.bad_signatures == 0
    prefix = config["presence"]["redis"]["key_prefix"]
    async with RedisCluster(host=HOST, port=cluster_setup.nodes[0].port) as r:
        keys = [f"{prefix}:events:{{{prefix}:{shard}}}" for shard in range(16)]
        masters = {cluster_setup.master_of_slot(cluster_setup.keyslot(k)).port for k in keys}
        assert len(masters) == cluster_setup.masters  # the shard streams span the masters
        for key in keys:
            # every entry handed to the group was acknowledged after its 2xx
            await eventually(lambda key=key: _nothing_pending(r, key), timeout=10)
    assert "Traceback" not in node.log()


async def _nothing_pending(r: RedisCluster, key: str) -> bool:
    groups = await r.xinfo_groups(key)
    assert groups, key
    return all(g["pending"] == 0 for g in groups) and all(g["lag"] == 0 for g in groups)
