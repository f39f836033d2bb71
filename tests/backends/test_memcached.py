"""Memcached-only behaviour, against real memcached processes: blocking calls stay off
the event loop, a stalled or dead server answers ``BackendUnavailable`` quickly and
only for the keys it holds, and presence is re-populated when it returns."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client as MemcacheClient

from sanic_rt.backend import BackendUnavailable
from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from tests.backends.conftest import TIMINGS
from tests.backends.test_conformance import LIMIT, T0, conn, offline, online
from tests.support.procs import Proc, memcached_process

BackendMaker = Callable[..., Any]


@pytest.fixture
async def make_memcached(tmp_path: Path) -> AsyncIterator[BackendMaker]:
    """make_memcached(procs, **keys) -> a started MemcachedBackend, built as the app does."""
    made: list[Any] = []

    async def make(procs: list[Proc], **keys: Any) -> Any:
        overrides = {
            "presence.backend": "memcached",
            "presence.memcached.servers": [f"127.0.0.1:{p.port}" for p in procs],
            # Every test has its own memcached; backends made here are nodes sharing it.
            "presence.memcached.key_prefix": "t",
        } | {f"presence.memcached.{k}": v for k, v in keys.items()}
        config = load_config(env={}, overrides=overrides)
        host = PluginHost(config)
        host.load()
        backend = host.backends()["memcached"](config, TIMINGS)
        await backend.start()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
def two_memcached(tmp_path: Path) -> Any:
    procs = [memcached_process(tmp_path).start(), memcached_process(tmp_path).start()]
    yield procs
    for proc in procs:
        proc.stop()


async def test_memcached_calls_run_off_the_event_loop_thread(memcached_proc, make_memcached):
    backend = await make_memcached([memcached_proc], threads=3)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    commands: list[str] = []

    def on_call(command: str) -> None:
        threads.append(threading.get_ident())
        commands.append(command)

    backend.on_call = on_call
    await backend.connect(conn("u1", "s1"), T0, LIMIT)
    await asyncio.gather(
        *(backend.touch([conn(f"u{i}", f"s{i}")], T0 + 1, activity=True) for i in range(20))
    )
    await backend.disconnect("u1", "s1", T0 + 2)
    await backend.set_status("u2", "dnd", T0 + 2)
    await backend.get_many(["u1", "u2"], T0 + 2)
    await backend.sweep(T0 + 100, 100)
    await backend.online_users(None, 10)
    await backend.stats(T0 + 2)
    await backend.check()
    assert {"gets_many", "add", "cas", "get_many", "version"} <= set(commands)
    assert threads and loop_thread not in threads
    assert len(set(threads)) <= 3  # the bounded pool, [presence.memcached] threads


async def test_stalled_server_times_out_quickly_without_blocking_the_loop(
    memcached_proc, make_memcached
):
    backend = await make_memcached([memcached_proc], timeout=0.3)
    await backend.connect(conn("u1", "s1"), T0, LIMIT)
    memcached_proc.signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                started = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - started - 0.01)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable):
            await backend.get_many(["u1"], T0 + 1)
        elapsed = time.perf_counter() - started
        task.cancel()
        assert elapsed < 2.0  # one socket timeout, not a hang
        # The call blocks a worker for the 0.3 s timeout; a blocked loop would lag that much.
        assert len(lags) >= 10 and max(lags) < 0.2
    finally:
        memcached_proc.signal(signal.SIGCONT)
    assert (await backend.get_many(["u1"], T0 + 1))["u1"].online


async def test_dead_server_fails_only_its_users_and_recovers(two_memcached, make_memcached):
    # A long timeout, so that "refused at once" is told apart from "timed out".
    backend = await make_memcached(two_memcached, index_buckets=8, timeout=5.0)
    other = await make_memcached(two_memcached, index_buckets=8, timeout=5.0)  # a second node
    users = [f"user{i:02d}" for i in range(40)]
    for i, user in enumerate(users):
        await backend.connect(conn(user, f"s{i}"), T0, LIMIT)
    dead = two_memcached[1]
    dead_index = backend.addresses.index(("127.0.0.1", dead.port))
    on_dead = {u for u in users if backend.server_index_of_user(u) == dead_index}
    assert 0 < len(on_dead) < len(users)  # the test needs users on both servers
    assert await backend.online_count() == len(users)

    dead.kill()
    # A refresh batch mixing both servers' users (as refresh_local and the
    # heartbeat batcher send them): the live server's users are refreshed and
    # returned, only the dead server's are unavailable.
    started = time.perf_counter()
    mixed = await other.touch(
        [conn(u, f"s{i}") for i, u in enumerate(users)], T0 + 1, activity=False
    )
    assert time.perf_counter() - started < 2.5
    assert mixed.unavailable == on_dead
    assert mixed.statuses == {u: "online" for u in users if u not in on_dead}
    assert mixed.changes == []
    # Connected at T0 they would have expired at T0 + ttl; refreshed at T0 + 1 they live on.
    alive = [u for u in users if u not in on_dead]
    records = await backend.get_many(alive, T0 + TIMINGS.ttl + 0.5)
    assert all(records[u].connections == 1 for u in alive)
    # A batch of the dead server's users only: nothing landed, the call fails whole.
    with pytest.raises(BackendUnavailable):
        await other.touch([conn(u, "s") for u in sorted(on_dead)], T0 + 1, activity=False)
    for i, user in enumerate(users):
        started = time.perf_counter()
        if user in on_dead:
            with pytest.raises(BackendUnavailable):
                await backend.get_many([user], T0 + 1)
            with pytest.raises(BackendUnavailable):
                await other.touch([conn(user, f"s{i}")], T0 + 1, activity=False)
        else:
            assert (await backend.get_many([user], T0 + 1))[user].online
            result = await other.touch([conn(user, f"s{i}")], T0 + 1, activity=False)
            assert result.statuses == {user: "online"}
        assert time.perf_counter() - started < 2.5  # refused at once, not a timeout
    # The index spans both servers: no answer rather than a wrong number.
    for query in (backend.online_count(), backend.online_users(None, 10), backend.stats(T0)):
        with pytest.raises(BackendUnavailable):
            await query
    with pytest.raises(BackendUnavailable):
        await backend.check()
    # The sweeper reads the live server's buckets and settles its users.
    assert await backend.sweep(T0 + 1, 100) == []
    # A user on the live server goes offline normally, announced once, by
    # settle (with users of the dead server in the same call) or by the sweep.
    alive_user, alive_user2 = alive[:2]
    dead_user = sorted(on_dead)[0]
    await backend.disconnect(alive_user, f"s{users.index(alive_user)}", T0 + 2)
    await backend.disconnect(alive_user2, f"s{users.index(alive_user2)}", T0 + 2)
    assert await other.settle([dead_user, alive_user], T0 + 8) == [offline(alive_user, T0 + 8)]
    with pytest.raises(BackendUnavailable):
        await other.settle([dead_user], T0 + 8)
    assert await other.sweep(T0 + 8, 100) == [offline(alive_user2, T0 + 8)]
    await backend.connect(conn(alive_user2, "s-back"), T0 + 8, LIMIT)  # back for the rest

    dead.start()  # same port, empty: everything it held is gone
    await backend.check()
    assert not (await backend.get_many(sorted(on_dead), T0 + 9))[sorted(on_dead)[0]].online
    # The periodic refresh re-creates the lost records and index entries, and
    # announces those users online again (they were lost, so nobody saw them go).
    live = [conn(u, f"s{i}") for i, u in enumerate(users) if u != alive_user]
    result = await other.touch(live, T0 + 9, activity=False)
    assert result.unavailable == frozenset()
    assert sorted(c.user_id for c in result.changes) == sorted(on_dead)
    assert all(c == online(c.user_id) for c in result.changes)
    records = await backend.get_many(users, T0 + 9)
    assert all(records[u].online for u in users if u != alive_user)
    assert await backend.online_count() == len(users) - 1
    page, _ = await backend.online_users(None, 100)
    assert page == sorted(u for u in users if u != alive_user)
    stats = await backend.stats(T0 + 9)
    # alive_user2 has its old connection (refreshed by the touch) and "s-back".
    assert stats.online_users == len(users) - 1 and stats.connections == len(users)


async def test_exhausted_cas_retries_skip_one_user_and_keep_the_rest(
    memcached_proc, make_memcached
):
    # One cas attempt per user, and another writer that changes the victim's record
    # on the real server between this backend's gets and its cas: the victim's cas
    # is refused every time, deterministically, while the other users' land.
    backend = await make_memcached([memcached_proc], max_cas_retries=1)
    victim, users = "victim", ["a", "b"]
    for i, user in enumerate([victim, *users]):
        await backend.connect(conn(user, f"s{i}"), T0, LIMIT)
        await backend.disconnect(user, f"s{i}", T0 + 1)  # grace until T0 + 6
    writer = MemcacheClient(("127.0.0.1", memcached_proc.port), timeout=2)
    key = backend.user_key(victim)
    cas_seen: list[str] = []

    def concurrent_write(command: str) -> None:
        # Runs in the backend's worker thread just before each command it sends.
        if command == "cas":
            cas_seen.append(command)
            value, token = writer.gets(key)
            assert writer.cas(key, value, token, expire=backend.record_exptime, noreply=False)

    backend.on_call = concurrent_write
    try:
        # Settle: a and b go offline and are returned (and de-indexed); the victim is
        # skipped, not failing the call, and left for a later sweep.
        settled = await backend.settle([victim, *users], T0 + 7)
        assert settled == [offline("a", T0 + 7), offline("b", T0 + 7)]
        # Touch: a and b come back online, returned and indexed; only the victim
        # is unavailable.
        touched = await backend.touch(
            [conn(u, f"t{i}") for i, u in enumerate([victim, *users])], T0 + 8, activity=False
        )
        assert touched.unavailable == {victim}
        assert touched.statuses == {"a": "online", "b": "online"}
        assert touched.changes == [online(u, last_seen=T0 + 7) for u in users]
        # A single-user operation has no batch to report into: it raises.
        with pytest.raises(BackendUnavailable):
            await backend.set_status(victim, "dnd", T0 + 8)
    finally:
        backend.on_call = None
        writer.close()
    assert cas_seen  # the victim's cas really was raced
    page, _ = await backend.online_users(None, 10)
    assert page == ["a", "b", victim]  # the victim was never announced offline
    # Exactly once: what was returned is not returned again; the victim is settled later.
    assert (await backend.touch([conn(u, "t") for u in users], T0 + 9, False)).changes == []
    assert await backend.sweep(T0 + 9, 100) == [offline(victim, T0 + 9)]
    assert await backend.sweep(T0 + 9, 100) == []


async def test_any_user_id_makes_a_valid_key(memcached_proc, make_memcached):
    backend = await make_memcached([memcached_proc])
    ids = ["with space", "ünïcode", "x" * 300, "tab\there", "a:b/c"]
    for i, user in enumerate(ids):
        assert (await backend.connect(conn(user, f"s{i}"), T0, LIMIT)).changes == [online(user)]
    records = await backend.get_many(ids, T0 + 1)
    assert all(records[u].online for u in ids)
    page, _ = await backend.online_users(None, 100)
    assert page == sorted(ids)
    assert len({backend.user_key(u) for u in ids}) == len(ids)
    assert all(len(backend.user_key(u)) <= 250 and " " not in backend.user_key(u) for u in ids)


async def test_a_lost_index_bucket_is_rewritten_within_ttl(memcached_proc, make_memcached):
    backend = await make_memcached([memcached_proc])
    await backend.connect(conn("u1", "s1"), T0, LIMIT)
    assert await backend.online_count() == 1
    # Eviction of the index items (records survive): a real delete on the real server.
    raw = MemcacheClient(("127.0.0.1", memcached_proc.port), timeout=2)
    raw.delete_many(backend.bucket_keys, noreply=False)
    raw.close()
    assert await backend.online_count() == 0
    # A refresh within ttl of the last index write leaves the bucket alone ...
    await backend.touch([conn("u1", "s1")], T0 + 6, activity=False)
    assert await backend.online_count() == 0
    # ... the first one after ttl re-asserts the entry, announcing nothing.
    result = await backend.touch([conn("u1", "s1")], T0 + TIMINGS.ttl + 1, activity=False)
    assert result.changes == []
    assert await backend.online_count() == 1
    assert await backend.sweep(T0 + 2 * TIMINGS.ttl + 2, 100) == [
        offline("u1", T0 + 2 * TIMINGS.ttl + 2)
    ]
