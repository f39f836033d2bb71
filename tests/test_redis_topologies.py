"""The Redis backend and the bus on Sentinel and Redis Cluster URLs: layout, bad input, faults.

Failover under load through the real server is tests/test_redis_failover.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sanic_rt.backend import BackendUnavailable, PresenceBackend
from sanic_rt.config import ConfigError, load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence_model import Connection, Timings
from tests.conftest import base_config
from tests.support.clients import eventually, http, make_token
from tests.support.cluster import check_config
from tests.support.procs import HOST, Proc, free_port, wait_until
from tests.support.topologies import ClusterSetup, ask, sentinel_setup  # noqa: F401 (fixture)

TIMINGS = Timings(ttl=10.0, offline_grace=5.0, idle_timeout=100.0)
#: slow failure detection: a killed master stays a master long enough to test around it
NODE_TIMEOUT_MS = 8000
T0 = 1_000_000.0
_prefixes = itertools.count(1)


def redis_config(url: str, **redis: Any) -> Any:
    # The event stream on: the Lua script's XADD (in the shard's slot) runs on the Cluster too.
    overrides = {"presence.backend": "redis", "presence.redis.url": url}
    overrides |= {"events.stream.enabled": True}
    return load_config(
        env={}, overrides=overrides | {f"presence.redis.{k}": v for k, v in redis.items()}
    )


def build_backend(url: str, **redis: Any) -> PresenceBackend:
    config = redis_config(url, **redis)
    host = PluginHost(config)
    host.load()
    return host.backends()["redis"](config, TIMINGS)


@pytest.fixture(scope="module")
def cluster_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster"), node_timeout_ms=NODE_TIMEOUT_MS)
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture
async def cluster_backend(cluster_setup: ClusterSetup) -> AsyncIterator[PresenceBackend]:
    backend = build_backend(cluster_setup.url(), key_prefix=f"k{next(_prefixes)}")
    await backend.start()
    yield backend
    await backend.close()


def conn(user_id: str, sid: str, namespace: str = "/chats") -> Connection:
    return Connection(user_id=user_id, sid=sid, namespace=namespace, device="web")


# --- URLs ------------------------------------------------------------------------------

MALFORMED = [
    "redis+sentinel://",  # no host
    "redis+sentinel:///0/mymaster",
    f"redis+sentinel://{HOST}:99999/0/mymaster",  # port out of range
    f"redis+sentinel://{HOST}:26379",  # no db/service
    "redis+cluster://",
    f"redis+cluster://{HOST}:7000,{HOST}:0",
    f"redis+cluster://{HOST}:7000/3",  # a cluster has db 0 only
    f"redis://{HOST}:70000/0",
    "redis:///0",
    "http://127.0.0.1:6379",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_url_is_a_config_error_naming_the_key(url):
    with pytest.raises(ConfigError) as err:
        build_backend(url)
    assert err.value.key == "presence.redis.url"
    assert "\n" not in str(err.value)


def test_malformed_sentinel_url_exits_2_naming_the_key(tmp_path):
    config = base_config(presence={"backend": "redis", "redis": {"url": "redis+sentinel://"}})
    result = check_config(tmp_path, config)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "presence.redis.url" in lines[0], result.stderr


def test_pubsub_manager_on_a_cluster_url_is_refused(tmp_path):
    url = f"redis+cluster://{HOST}:{free_port()}"
    config = base_config(
        presence={"backend": "redis", "redis": {"url": url}}, cluster={"manager": "redis"}
    )
    result = check_config(tmp_path, config)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert "cluster.manager" in line and "redis-streams" in line, line


def test_targeted_routing_on_a_cluster_url_is_refused_at_start_up(tmp_path):
    url = f"redis+cluster://{HOST}:{free_port()}"
    cluster = {"manager": "redis-streams", "routing": "targeted"}
    config = base_config(presence={"backend": "redis", "redis": {"url": url}}, cluster=cluster)
    result = check_config(tmp_path, config)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert "cluster.routing" in line and "broadcast" in line, line


@pytest.mark.parametrize(
    "sections",
    [
        {"cluster": {"manager": "redis-streams"}},
        {"events": {"webhook": {"url": "http://127.0.0.1:9/hook", "secret": "s" * 32}}},
    ],
)
def test_the_streams_bus_and_webhooks_are_accepted_on_a_cluster_url(tmp_path, sections):
    url = f"redis+cluster://{HOST}:{free_port()}"
    config = base_config(presence={"backend": "redis", "redis": {"url": url}}, **sections)
    result = check_config(tmp_path, config)
    assert result.returncode == 0, result


# --- Redis Cluster: one slot per user operation, indexes spread over the masters --------


async def test_every_key_of_a_user_operation_is_in_one_slot(cluster_setup, cluster_backend):
    b = cluster_backend
    owners = set()
    for n in range(40):
        user_id = f"user-{n}"
        shard = b.shard(user_id)
        keys = [b.user_key(user_id), *b._index_keys(shard)]
        slots = {cluster_setup.keyslot(key) for key in keys}
        assert len(slots) == 1, (user_id, keys, slots)
        owners.add(cluster_setup.master_of_slot(slots.pop()).port)
    # The shards' indexes are spread: every master takes a share of the writes.
    assert len(owners) == cluster_setup.masters


async def test_every_operation_runs_on_the_cluster(cluster_setup, cluster_backend):
    """A CROSSSLOT (or any other error) from any operation fails this test."""
    b = cluster_backend
    users = [f"u{n}" for n in range(60)]  # every one of the 16 shards
    assert len({b.shard(u) for u in users}) == b.shards
    await b.check()
    for n, user_id in enumerate(users):
        result = await b.connect(conn(user_id, f"s{n}"), T0, 5)
        assert result.accepted and [c.online for c in result.changes] == [True]
    touched = await b.touch([conn(u, f"s{n}") for n, u in enumerate(users)], T0 + 1, True)
    assert set(touched.statuses) == set(users)
    records = await b.get_many(users, T0 + 1)
    assert all(r.online for r in records.values()) and len(records) == len(users)
    assert await b.online_count() == len(users)
    page, cursor = await b.online_users(None, 25)
    rest, _ = await b.online_users(cursor, 100)
    assert sorted(page + rest) == sorted(users)
    stats = await b.stats(T0 + 1)
    assert stats.online_users == len(users) and stats.by_namespace == {"/chats": len(users)}
    record, changes = await b.set_status(users[0], "dnd", T0 + 2)
    assert record.status == "dnd" and changes
    for n, user_id in enumerate(users[:30]):
        result = await b.disconnect(user_id, f"s{n}", T0 + 3)
        assert result.changes == [] and result.grace_until == pytest.approx(T0 + 8)
    settled = await b.settle(users[:30], T0 + 9)
    assert sorted(c.user_id for c in settled) == sorted(users[:30])
    expired = await b.sweep(T0 + 100, 1000)  # the others' entries expired (ttl 10)
    assert sorted(c.user_id for c in expired) == sorted(users[30:])
    assert await b.online_count() == 0
    await assert_every_change_is_in_the_event_streams(cluster_setup, b, users)


async def assert_every_change_is_in_the_event_streams(
    cluster_setup: ClusterSetup, b: Any, users: list[str]
) -> None:
    """A redis-py Cluster consumer reads every shard's stream, each in its own slot."""
    from redis.asyncio.cluster import RedisCluster

    keys = b.event_stream_keys()
    assert keys is not None and len(keys) == b.shards
    async with RedisCluster(host=HOST, port=cluster_setup.nodes[0].port) as reader:
        kinds: dict[str, list[str]] = {}
        for key in keys:
            for _id, fields in await reader.xrange(key):
                event = json.loads(fields[b"event"])
                kinds.setdefault(event["user_id"], []).append(event["type"])
    # online, dnd for the first user, then offline (disconnect + settle, or expiry)
    assert sorted(kinds) == sorted(users)
    assert all(k[0] == "presence.online" and k[-1] == "presence.offline" for k in kinds.values())


async def test_manual_cluster_failover_under_load(cluster_setup, cluster_backend):
    """CLUSTER FAILOVER on a replica while refreshes run: they resume with no restart."""
    b = cluster_backend
    users = [f"f{n}" for n in range(48)]
    conns = [conn(u, f"s{n}") for n, u in enumerate(users)]
    for c in conns:
        await b.connect(c, T0, 5)
    master = cluster_setup.master_of_slot(cluster_setup.keyslot(b.user_key(users[0])))
    replica = cluster_setup.replica_of(master)
    outcomes = {"ok": 0, "unavailable": 0}
    stop = asyncio.Event()

    async def refresh_forever() -> None:
        while not stop.is_set():
            try:
                result = await b.touch(conns, T0 + 1, False)
                outcomes["unavailable" if result.unavailable else "ok"] += 1
            except BackendUnavailable:
                outcomes["unavailable"] += 1
            await asyncio.sleep(0.01)

    load = asyncio.create_task(refresh_forever())
    try:
        await eventually(lambda: outcomes["ok"] > 0)
        # Replicas do not get the script cache: the promoted one answers NOSCRIPT
        # while the client's map still names the old primaries (certain, not by luck).
        await asyncio.to_thread(ask, replica.port, "SCRIPT", "FLUSH")
        await asyncio.to_thread(cluster_setup.failover_to, replica)
        after = outcomes["ok"]
        await eventually(lambda: outcomes["ok"] > after + 3, timeout=20)
    finally:
        stop.set()
        await load
    assert cluster_setup.master_of_slot(cluster_setup.keyslot(b.user_key(users[0]))) is replica
    records = await b.get_many(users, T0 + 2)
    assert all(r.online for r in records.values())
    assert await b.online_count() == len(users)


async def test_one_master_down_the_other_shards_still_answer(cluster_setup, cluster_backend):
    """A sweep or refresh keeps what the live masters decided while one master is down."""
    b = cluster_backend
    users = [f"m{n}" for n in range(60)]
    for n, user_id in enumerate(users):
        await b.connect(conn(user_id, f"s{n}"), T0, 5)
        await b.disconnect(user_id, f"s{n}", T0 + 1)  # offline due at T0 + 6
    victim = cluster_setup.master_of_slot(cluster_setup.keyslot(b.user_key(users[0])))
    on_victim = {
        u
        for u in users
        if cluster_setup.master_of_slot(cluster_setup.keyslot(b.user_key(u))) is victim
    }
    assert 0 < len(on_victim) < len(users)
    victim.kill()  # not failed over for NODE_TIMEOUT_MS: its shards simply do not answer
    try:
        settled = await b.settle(users, T0 + 7)
        assert {c.user_id for c in settled} == set(users) - on_victim
        assert all(not c.online for c in settled)
        touched = await b.touch([conn(u, f"t{n}") for n, u in enumerate(users)], T0 + 8, False)
        assert touched.unavailable == on_victim
        assert set(touched.statuses) == set(users) - on_victim
    finally:
        victim.start()
        wait_until(cluster_setup.healthy, timeout=30, interval=0.1)


# --- faults: the server starts, /ready says presence is down, and it recovers ----------


async def ready(node: Proc) -> tuple[int, Any]:
    return await http("GET", node.url + "/ready")


async def assert_presence_down_then_up(node: Proc, clients: Any, bring_up: Any) -> None:
    status, body = await ready(node)
    assert status == 503 and body["data"]["presence"] == "down", body
    alice = await clients(node.url, make_token("alice"))  # accepted while presence is down
    assert (await alice.call("ping", {}))["error"]["code"] == "unavailable"
    await bring_up()

    async def recovered() -> bool:
        # /ready may answer before every slot of a restarted cluster is served
        status, body = await http("GET", f"{node.url}/api/v1/presence/alice")
        return status == 200 and body["data"]["online"] and (await ready(node))[0] == 200

    await eventually(recovered, timeout=20)
    log = node.log()
    assert "Traceback" not in log
    # One warning per interval while down, not one per failing call.
    assert 1 <= log.count("presence backend redis unavailable") <= 2, log


async def test_unknown_sentinel_service_then_monitored(sentinel_setup, start_server, clients):  # noqa: F811
    service = f"late{free_port()}"
    node = start_server(cluster_config_for(sentinel_setup.url(service)))

    async def monitor() -> None:
        master = sentinel_setup.master_port()
        for s in sentinel_setup.sentinels:
            await _sentinel_command(s.port, "SENTINEL", "MONITOR", service, HOST, master, 2)

    await assert_presence_down_then_up(node, clients, monitor)


async def test_all_sentinels_down_then_back(sentinel_setup, start_server, clients):  # noqa: F811
    for s in sentinel_setup.sentinels:
        s.stop()
    try:
        node = start_server(cluster_config_for(sentinel_setup.url()))

        async def restart() -> None:
            for s in sentinel_setup.sentinels:
                s.start()

        await assert_presence_down_then_up(node, clients, restart)
    finally:
        for s in sentinel_setup.sentinels:
            if not s.alive:
                s.start()


async def test_no_cluster_seed_answers_then_cluster_back(cluster_setup, start_server, clients):
    for n in cluster_setup.nodes:
        n.stop()
    try:
        # the bus on its own single Redis would need one more process: no bus here
        config = base_config(presence={"backend": "redis", "redis": {"url": cluster_setup.url()}})
        node = start_server(config)

        async def restart() -> None:
            for n in cluster_setup.nodes:
                n.start()

        await assert_presence_down_then_up(node, clients, restart)
    finally:
        for n in cluster_setup.nodes:
            if not n.alive:
                n.start()


def cluster_config_for(url: str) -> dict[str, Any]:
    """Presence and the pub/sub bus on one Redis URL (here: Sentinel)."""
    return base_config(
        presence={"backend": "redis", "redis": {"url": url}}, cluster={"manager": "redis"}
    )


async def _sentinel_command(port: int, *command: Any) -> Any:
    import redis.asyncio as aioredis

    async with aioredis.Redis(host=HOST, port=port) as r:
        return await r.execute_command(*command)
