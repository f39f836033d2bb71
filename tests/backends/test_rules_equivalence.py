"""The presence rules in Python (memory backend) and in Lua (Redis backend) are one rule set.

A hypothesis state machine drives both backends side by side with random
sequences of connect / touch / disconnect / set_status / clock advances /
settle / sweep / dead-node settling, and after every step requires the same
answers (accepted, changes with their event seq, statuses, grace deadlines,
records) and the same stored state, online index and stats. The Redis side is a real redis-server
(one per module), flushed for every example. A failing sequence that was a
real divergence is kept below as an explicit regression test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from backends.memory import MemoryBackend
from backends.redis import RedisBackend, state_from_hash
from sanic_rt.backend import ConnectResult
from sanic_rt.config import load_config
from sanic_rt.presence_model import STATUSES, Connection, PublicView, Timings, UserState

T = TypeVar("T")
T0 = 1_800_000_000.0
TTL, IDLE = 10.0, 25.0
LIMIT = 100  # sweep/settle_nodes limit: above the number of users, so no backend stops early
USERS = ["u1", "u2", "u3", "x|y:z"]
SIDS = ["s1", "s2", "s3"]
# Separators of the Lua entry encoding ("|", ",") inside the fields it packs.
NAMESPACES = ["/chats", "/orders", "/a|b,2"]
DEVICES = ["", "web", "ph|o,ne"]
NODES = ["", "A", "B"]
# Clock advances: the timings themselves hit the `<=` boundaries exactly, and a
# small step back is the next call coming from a node whose clock is behind.
ADVANCES = st.one_of(
    st.sampled_from([0.0, 0.001, TTL / 3, TTL, IDLE, 4.0]),
    st.floats(min_value=0, max_value=2 * IDLE, allow_nan=False),
    st.floats(min_value=-3, max_value=0),
)
EXAMPLES = settings(
    max_examples=60,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    stateful_step_count=30,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the work tree
    suppress_health_check=[HealthCheck.too_slow],
)

connections = st.builds(
    Connection,
    user_id=st.sampled_from(USERS),
    sid=st.sampled_from(SIDS),
    namespace=st.sampled_from(NAMESPACES),
    device=st.sampled_from(DEVICES),
    node=st.sampled_from(NODES),
)


def by_user(changes: Sequence[PublicView]) -> list[tuple[PublicView, int, float, bool]]:
    """Changes in one order (the Redis backend returns them by shard), with what
    PublicView's equality leaves out: the event numbering (seq, at, was_online)."""
    return sorted(((c, c.seq, c.at, c.was_online) for c in changes), key=lambda c: c[0].user_id)


class TwoBackends:
    """A memory and a Redis backend with the same timings, on one private event loop."""

    def __init__(self, redis_port: int, timings: Timings) -> None:
        self.loop = asyncio.new_event_loop()
        config = load_config(
            env={},
            overrides={
                "presence.backend": "redis",
                "presence.redis.url": f"redis://127.0.0.1:{redis_port}/0",
                # Two shards: multi-user calls span shards (one script call each).
                "presence.redis.index_shards": 2,
            },
        )
        self.memory = MemoryBackend(config, timings)
        self.redis = RedisBackend(config, timings)
        self.run(self.redis.redis.flushdb())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def both(self, call: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """The same call on both backends: (memory's answer, Redis's answer)."""
        memory = self.run(getattr(self.memory, call)(*args, **kwargs))
        redis = self.run(getattr(self.redis, call)(*args, **kwargs))
        return memory, redis

    def stored(self, user_ids: Sequence[str]) -> tuple[list[UserState], list[UserState]]:
        """The users' stored states in each backend (a blank state where there is none)."""
        memory = [self.memory._users.get(user_id, UserState()) for user_id in user_ids]
        pipe = self.redis.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(self.redis.user_key(user_id))
        return memory, [state_from_hash(flat) for flat in self.run(pipe.execute())]

    def close(self) -> None:
        self.run(self.redis.close())
        self.loop.close()


class PresenceRules(RuleBasedStateMachine):
    """Random operations on both backends; every answer and every state must agree."""

    redis_port = 0  # set by the test (the module's redis-server)

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.pair: TwoBackends | None = None

    @initialize(grace=st.sampled_from([0.0, 4.0]))
    def start(self, grace: float) -> None:
        self.pair = TwoBackends(self.redis_port, Timings(TTL, grace, IDLE))

    def teardown(self) -> None:
        if self.pair is not None:
            self.pair.close()

    @property
    def backends(self) -> TwoBackends:
        assert self.pair is not None
        return self.pair

    # --- operations ------------------------------------------------------------------

    @rule(conn=connections, max_connections=st.sampled_from([1, 2, 50]))
    def connect(self, conn: Connection, max_connections: int) -> None:
        memory, redis = self.backends.both("connect", conn, self.now, max_connections)
        assert memory.accepted == redis.accepted
        assert by_user(memory.changes) == by_user(redis.changes)

    @rule(conns=st.lists(connections, min_size=1, max_size=4), activity=st.booleans())
    def touch(self, conns: list[Connection], activity: bool) -> None:
        memory, redis = self.backends.both("touch", conns, self.now, activity)
        assert by_user(memory.changes) == by_user(redis.changes)
        assert memory.statuses == redis.statuses

    @rule(user=st.sampled_from(USERS), sid=st.sampled_from(SIDS))
    def disconnect(self, user: str, sid: str) -> None:
        memory, redis = self.backends.both("disconnect", user, sid, self.now)
        assert memory.grace_until == redis.grace_until
        assert by_user(memory.changes) == by_user(redis.changes)

    @rule(user=st.sampled_from(USERS), sid=st.sampled_from(SIDS))
    def disconnect_after_outage(self, user: str, sid: str) -> None:
        memory, redis = self.backends.both("disconnect_after_outage", user, sid, self.now)
        assert memory.grace_until == redis.grace_until
        assert by_user(memory.changes) == by_user(redis.changes)

    @rule(user=st.sampled_from(USERS), status=st.sampled_from(STATUSES))
    def set_status(self, user: str, status: str) -> None:
        (m_record, m_changes), (r_record, r_changes) = self.backends.both(
            "set_status", user, status, self.now
        )
        assert m_record == r_record
        assert by_user(m_changes) == by_user(r_changes)

    @rule(dt=ADVANCES)
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(users=st.lists(st.sampled_from(USERS), max_size=3))
    def settle(self, users: list[str]) -> None:
        memory, redis = self.backends.both("settle", users, self.now)
        assert by_user(memory) == by_user(redis)

    @rule()
    def sweep(self) -> None:
        memory, redis = self.backends.both("sweep", self.now, LIMIT)
        assert by_user(memory) == by_user(redis)

    @rule(nodes=st.lists(st.sampled_from(NODES[1:]), min_size=1, max_size=2, unique=True))
    def settle_nodes(self, nodes: list[str]) -> None:
        memory, redis = self.backends.both("settle_nodes", nodes, self.now, LIMIT)
        assert by_user(memory.changes) == by_user(redis.changes)
        assert memory.remaining == redis.remaining

    # --- after every step ----------------------------------------------------------------

    @invariant()
    def same_records_state_index_and_stats(self) -> None:
        if self.pair is None:
            return
        pair = self.backends
        memory, redis = pair.both("get_many", USERS, self.now)
        assert memory == redis
        memory, redis = pair.stored(USERS)
        assert memory == redis
        memory, redis = pair.both("online_users", None, LIMIT)
        assert memory == redis
        memory, redis = pair.both("online_count")
        assert memory == redis
        memory, redis = pair.both("stats", self.now)
        assert memory == redis


@pytest.fixture(scope="module")
def redis_port(storage_procs: Any) -> int:
    return int(storage_procs("redis").port)


def test_memory_and_lua_rules_agree_on_random_sequences(redis_port: int) -> None:
    PresenceRules.redis_port = redis_port
    run_state_machine_as_test(PresenceRules, settings=EXAMPLES)


# --- divergences the machine found, kept as explicit regressions -------------------------


@pytest.fixture
def pair(redis_port: int) -> Iterator[TwoBackends]:
    backends = TwoBackends(redis_port, Timings(TTL, 4.0, IDLE))
    yield backends
    backends.close()


def assert_same_state(pair: TwoBackends, now: float) -> None:
    memory, redis = pair.both("get_many", USERS, now)
    assert memory == redis
    memory, redis = pair.stored(USERS)
    assert memory == redis
    memory, redis = pair.both("stats", now)
    assert memory == redis


def test_settling_dead_nodes_leaves_other_users_to_the_sweep(pair: TwoBackends) -> None:
    # The memory backend settled every user while looking for a dead node's ones,
    # without re-indexing or announcing them: "u1" turned away (and, once its entry
    # expired, offline) silently, and the sweep then had nothing left to announce.
    u1 = Connection("u1", "s1", "/chats", "", "B")
    pair.both("connect", u1, T0, 50)
    pair.both("connect", Connection("u2", "s1", "/chats", "", "A"), T0, 50)
    for t in (8, 16, 24):  # refreshes keep u1 connected, but are no activity
        pair.both("touch", [u1], T0 + t, False)
    now = T0 + IDLE
    memory, redis = pair.both("settle_nodes", ["A"], now, LIMIT)
    # u2's node died at T0, so its entry expired long ago: offline at once.
    offline_u2 = PublicView("u2", False, "offline", now)
    assert memory.changes == redis.changes == [offline_u2]
    assert_same_state(pair, now)
    away = [PublicView("u1", True, "away", None)]
    assert pair.both("sweep", now, LIMIT) == (away, away)
    assert_same_state(pair, now)


def test_stats_count_stored_entries_until_the_sweep(pair: TwoBackends) -> None:
    # Redis counts entries as written (docs/backends.md, "Counts lag a little");
    # the memory backend counted only live ones.
    pair.both("connect", Connection("u1", "s1", "/chats", "", ""), T0, 50)
    now = T0 + TTL
    memory, redis = pair.both("stats", now)
    assert memory == redis and memory.by_namespace == {"/chats": 1}
    offline = [PublicView("u1", False, "offline", now)]
    assert pair.both("sweep", now, LIMIT) == (offline, offline)
    memory, redis = pair.both("stats", now)
    assert memory == redis and memory.connections == 0


def test_a_refused_connect_changes_nothing(pair: TwoBackends) -> None:
    # UserState.connect pruned expired entries before refusing; the Lua twin
    # writes nothing back, so the stored records (and the counts) differed.
    pair.both("touch", [Connection("u1", "s1", "/chats", "", "")], T0, False)
    pair.both("touch", [Connection("u1", "s2", "/chats", "", "")], T0 + 8, False)
    now = T0 + TTL + 1  # s1 expired, s2 live
    refused = ConnectResult(False, [])
    assert pair.both("connect", Connection("u1", "s3", "/chats"), now, 1) == (refused, refused)
    assert_same_state(pair, now)
    assert set(pair.stored(["u1"])[0][0].conns) == {"s1", "s2"}
