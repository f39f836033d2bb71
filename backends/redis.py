"""Redis presence backend: shared by every worker and node.

Each operation is one round trip: a Lua script (``redis_presence.lua``, the
rules of :class:`~sanic_rt.presence_model.UserState`) loaded once and run by
EVALSHA, or one pipeline for reads. The script decides each online/offline
transition atomically, so with N nodes each one is announced exactly once.

Key layout. A user lives on shard ``crc32(user_id) % index_shards``; all of a
shard's keys carry the hash tag ``{<prefix>:<shard>}``, so a per-user script
touches one slot (Redis Cluster safe)::

    <prefix>:{<prefix>:<s>}:u:<user_id>  HASH the user's state and connections
    <prefix>:{<prefix>:<s>}:online       ZSET online users (score 0, lex order)
    <prefix>:{<prefix>:<s>}:due          ZSET users by next deadline (the sweeper's)
    <prefix>:{<prefix>:<s>}:ns           HASH namespace -> live connection entries
    <prefix>:{<prefix>:<s>}:node:<id>    SET users node <id> holds connections of (liveness)
    <prefix>:nodes                       ZSET node -> alive until (node liveness, any slot)
    <events key>:{<prefix>:<s>}          STREAM presence events of the shard's users
                                         (only with [events.stream]; see events_key)

Expiry is decided from the callers' clocks passed as arguments; native
PEXPIRE on a user's hash is only a clean-up net, far beyond ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any

from redis.exceptions import (
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sanic_rt.backend import (
    BackendUnavailable,
    ConnectResult,
    DisconnectResult,
    NodeSweep,
    PresenceBackend,
    PresenceStats,
    TouchResult,
)
from sanic_rt.config import ConfigError
from sanic_rt.hookspecs import hookimpl
from sanic_rt.presence_model import (
    Connection,
    PresenceRecord,
    PublicView,
    UserState,
    offline_record,
)
from sanic_rt.redis_connect import close_redis, connect_redis, is_cluster

SCRIPT = files(__package__).joinpath("redis_presence.lua").read_text(encoding="utf-8")

#: errors that mean "Redis is not there right now", answered ``unavailable``
UNAVAILABLE_ERRORS = (
    RedisConnectionError,  # includes BusyLoadingError (a restarted Redis loading its data)
    RedisTimeoutError,
    ReadOnlyError,  # a replica promoted away from us during a failover
    ClusterError,  # Redis Cluster: CLUSTERDOWN, MASTERDOWN, redirected too often
    TryAgainError,  # a slot migrating during a resharding
    SlotNotCoveredError,  # a failed master's slots not taken over yet
    OSError,
    asyncio.TimeoutError,
)
#: how redis-py's RedisClusterException begins when no cluster node answers
CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
#: seconds a call may wait for a free pooled connection at the least
QUEUE_WAIT_MIN = 5.0
#: dead nodes one heartbeat reports at most (the rest come with the next beats)
DEAD_NODES_MAX = 100
#: server replies that are outages, not bugs in our scripts
UNAVAILABLE_REPLIES = ("OOM", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "NOREPLICAS")


def _closed_under_us(err: Exception) -> bool:
    """A cluster connection closed while a command used it.

    redis-py's asyncio RedisCluster (8.1, ``NodesManager.initialize`` and
    ``RedisCluster.initialize``) closes every node's connections when a slot-map
    refresh runs or fails, including those other calls are using: under uvloop
    their write raises RuntimeError, else AttributeError on the dropped writer.
    Only ever seen while a node is down, so it is an outage like the others.
    """
    text = str(err)
    return "closed" in text or "'NoneType' object has no attribute" in text


def _answered_changes(replies: list[Any], now: float) -> list[PublicView]:
    """The changes of every shard that answered (``None``: its master was down)."""
    return [c for reply in replies if reply is not None for c in _changes(reply[1], now)]


def _num(raw: bytes | None) -> float | None:
    return None if raw is None or raw == b"" else float(raw)


def _conn_entry(raw: bytes) -> list[Any]:
    """Decode ``<expires_at>|<len(ns)>,<len(node)>|<ns><node><device>`` (lengths in bytes).

    Entries written before node ids have no ``,<len(node)>`` and no node.
    """
    expires, _, rest = raw.partition(b"|")
    lengths, _, rest = rest.partition(b"|")
    ns_len, _, node_len = lengths.partition(b",")
    n, m = int(ns_len), int(node_len or 0)
    return [float(expires), rest[:n].decode(), rest[n + m :].decode(), rest[n : n + m].decode()]


def state_from_hash(flat: dict[bytes, bytes]) -> UserState:
    """The UserState stored in a user's hash (as HGETALL returns it)."""
    state = UserState()
    for field, value in flat.items():
        if field.startswith(b"c:"):
            state.conns[field[2:].decode()] = _conn_entry(value)
        elif field == b"s":
            state.status = value.decode()
        elif field == b"o":
            state.online = value == b"1"
        elif field == b"i":
            state.idle = value == b"1"
        elif field == b"a":
            state.last_active = float(value)
        elif field == b"l":
            state.last_seen = _num(value)
        elif field == b"p":
            state.public_last_seen = _num(value)
        elif field == b"g":
            state.grace_until = _num(value)
        elif field == b"q":
            state.seq = int(value)
    return state


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _changes(rows: list[list[bytes]], now: float) -> list[PublicView]:
    return [
        PublicView(
            uid.decode(),
            online == b"1",
            status.decode(),
            _num(last_seen),
            seq=int(seq),
            at=now,
            was_online=was_online == b"1",
        )
        for uid, online, status, last_seen, seq, was_online in rows
    ]


class RedisBackend(PresenceBackend):
    name = "redis"
    shared = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config.presence.redis
        if "{" in cfg.key_prefix or "}" in cfg.key_prefix:
            # The prefix opens the hash tag; a brace in it would move every key's slot.
            raise ConfigError(
                self.config.source, "presence.redis.key_prefix", "must not contain { or }"
            )
        self.prefix = cfg.key_prefix
        self.shards = cfg.index_shards
        # One overall deadline per call, so that nothing waits on Redis for longer.
        self.deadline = cfg.connect_timeout + cfg.timeout
        # Waiting for one of our own pooled connections is local queueing, not an
        # outage: under a CPU-saturated loop it can exceed the Redis deadline while
        # Redis is fine. Calls queue on this semaphore (at most queue_wait), and
        # the deadline covers only the time spent talking to Redis.
        self._slots = asyncio.Semaphore(cfg.pool_size)
        self.queue_wait = max(QUEUE_WAIT_MIN, 5 * cfg.timeout)
        presence = self.config.presence
        # The clean-up net: an offline record is kept record_ttl; far beyond any deadline.
        expire = max(presence.record_ttl, 10 * (self.timings.ttl + self.timings.offline_grace))
        self._timing_args = [
            repr(float(self.timings.ttl)),
            repr(float(self.timings.offline_grace)),
            repr(float(self.timings.idle_timeout)),
            str(int(expire * 1000)),
        ]
        self.stream = self.config.events.stream_enabled()
        self.events_base = self.config.events.stream.key or f"{self.prefix}:events"
        if "{" in self.events_base or "}" in self.events_base:
            raise ConfigError(self.config.source, "events.stream.key", "must not contain { or }")
        # maxlen counts the entries of all the shards' streams together.
        self._maxlen = str(-(-self.config.events.stream.maxlen // self.shards))
        try:
            self.redis = connect_redis(
                cfg.url,
                max_connections=cfg.pool_size,
                timeout=cfg.timeout,
                connect_timeout=cfg.connect_timeout,
            )
        except ValueError as err:
            raise ConfigError(self.config.source, "presence.redis.url", str(err)) from None
        self.cluster = is_cluster(self.redis)
        # Calls run EVALSHA and fall back to EVAL (_run) or SCRIPT LOAD (_run_many)
        # on NOSCRIPT: a new, restarted or just-promoted Redis.
        self.script_sha = hashlib.sha1(SCRIPT.encode()).hexdigest()

    # --- keys ----------------------------------------------------------------------

    def shard(self, user_id: str) -> int:
        # crc32, not hash(): every process must agree on it.
        return zlib.crc32(user_id.encode()) % self.shards

    def _tag(self, shard: int) -> str:
        return f"{self.prefix}:{{{self.prefix}:{shard}}}"

    def user_key(self, user_id: str) -> str:
        return f"{self._tag(self.shard(user_id))}:u:{user_id}"

    def _index_keys(self, shard: int) -> list[str]:
        tag = self._tag(shard)
        return [f"{tag}:online", f"{tag}:due", f"{tag}:ns"]

    def events_key(self, shard: int) -> str:
        """The event stream of one shard: in the shard's slot, so its script may write it."""
        return f"{self.events_base}:{{{self.prefix}:{shard}}}"

    def event_stream_keys(self) -> list[str] | None:
        return [self.events_key(s) for s in range(self.shards)] if self.stream else None

    def _by_shard(self, user_ids: Sequence[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for user_id in dict.fromkeys(user_ids):
            out.setdefault(self.shard(user_id), []).append(user_id)
        return out

    # --- the Redis boundary ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise BackendUnavailable("redis: too many calls waiting for a connection") from None
        try:
            async with asyncio.timeout(self.deadline):
                if self.cluster:
                    # Learn the slot map before commands run: redis-py lets concurrent
                    # first commands race the discovery and lose their connections.
                    await self.redis.initialize()
                yield
        except UNAVAILABLE_ERRORS as err:
            raise BackendUnavailable(f"redis: {type(err).__name__}: {err}") from None
        except ResponseError as err:
            if str(err).startswith(UNAVAILABLE_REPLIES):
                raise BackendUnavailable(f"redis: {err}") from None
            raise
        except (RuntimeError, AttributeError) as err:
            if self.cluster and _closed_under_us(err):
                raise BackendUnavailable(f"redis: connection closed: {err}") from None
            raise
        except RedisClusterException as err:
            # redis-py's word for "no seed node answers"; any other is our bug (CROSSSLOT)
            if str(err).startswith(CLUSTER_UNREACHABLE):
                raise BackendUnavailable(f"redis: {err}") from None
            raise
        finally:
            self._slots.release()

    def _args(self, op: str, now: float, *rest: Any) -> list[Any]:
        return [op, repr(float(now)), *self._timing_args, *rest]

    def _event_args(self, shard: int) -> list[str]:
        """The script's last two arguments: the shard's stream ('' = none) and maxlen."""
        return [self.events_key(shard) if self.stream else "", self._maxlen]

    async def _run(self, shard: int, user_keys: list[str], args: list[Any]) -> list[Any]:
        keys = self._index_keys(shard) + user_keys
        args = args + self._event_args(shard)
        async with self._guard():
            try:
                return await self.redis.evalsha(self.script_sha, len(keys), *keys, *args)
            except NoScriptError:
                # A new or just-promoted master has an empty script cache. EVAL goes
                # where the keys live and caches the script there; redis-py's own
                # retry sends SCRIPT LOAD to the primaries it knows of, which right
                # after a Cluster failover is the old map (seen in CI: NOSCRIPT again).
                return await self.redis.eval(SCRIPT, len(keys), *keys, *args)

    async def _run_many(self, calls: list[tuple[int, list[str], list[Any]]]) -> list[Any]:
        """Several script calls (one per shard) in one pipelined round trip.

        EVALSHA directly rather than redis-py's pipeline script support, which
        costs a SCRIPT EXISTS round trip on every execute.
        """
        if not calls:
            return []
        if len(calls) == 1:
            return [await self._run(*calls[0])]
        if self.cluster:
            return await self._run_each(calls)
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        async with self._guard():
            for _attempt in range(2):
                pipe = self.redis.pipeline(transaction=False)
                for i in pending:
                    shard, user_keys, args = calls[i]
                    keys = self._index_keys(shard) + user_keys
                    args = args + self._event_args(shard)
                    pipe.evalsha(self.script_sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
                missing = []
                for i, reply in zip(pending, replies, strict=True):
                    if isinstance(reply, NoScriptError):
                        missing.append(i)
                    elif isinstance(reply, Exception):
                        raise reply
                    else:
                        results[i] = reply
                if not missing:
                    return results
                # A restarted (or new) Redis: load the script once and run what did not run.
                await self.redis.script_load(SCRIPT)
                pending = missing
        raise BackendUnavailable("redis: script could not be loaded")

    async def _run_each(self, calls: list[tuple[int, list[str], list[Any]]]) -> list[Any]:
        """The batch shape on a Redis Cluster: every shard's script call at once.

        A cluster pipeline refuses EVALSHA (redis-py), and the shards live on
        different nodes anyway. Each call takes its own pooled connection (and
        slot of the pool semaphore) and follows MOVED/ASK and NOSCRIPT on its own.
        While one master is down the other shards still answer: their replies
        (and the changes the scripts decided, which must be announced) are kept,
        and a shard that did not answer is ``None``. Unavailable only if none did.
        """
        replies = await asyncio.gather(
            *(self._run(*call) for call in calls), return_exceptions=True
        )
        failed = [r for r in replies if isinstance(r, BaseException)]
        for err in failed:
            if not isinstance(err, BackendUnavailable):
                raise err
        if failed and len(failed) == len(replies):
            raise failed[0]
        return [None if isinstance(r, BaseException) else r for r in replies]

    # --- interface -----------------------------------------------------------------

    async def start(self) -> None:
        # Nothing to do over the network: the server must start while Redis is down.
        return None

    async def close(self) -> None:
        await close_redis(self.redis)

    async def check(self) -> None:
        async with self._guard():
            await self.redis.ping()

    async def connect(self, conn: Connection, now: float, max_connections: int) -> ConnectResult:
        return (await self.connect_many([conn], now, max_connections))[0]

    async def connect_many(
        self, conns: Sequence[Connection], now: float, max_connections: int
    ) -> list[ConnectResult]:
        # One script call per connection (each atomic, run in order, so the
        # per-user cap stays exact), all in one pipelined round trip.
        calls = []
        for c in conns:
            fields = (c.user_id, c.sid, c.namespace, c.device, max_connections, c.node)
            calls.append(
                (
                    self.shard(c.user_id),
                    [self.user_key(c.user_id)],
                    self._args("connect", now, *fields),
                )
            )
        if self.cluster:
            # _run_many runs a cluster batch concurrently (_run_each): in order here.
            replies = [await self._run(*call) for call in calls]
        else:
            replies = await self._run_many(calls)
        return [
            ConnectResult(result[0] == b"1", _changes(changes, now)) for result, changes in replies
        ]

    @property
    def batches_connects(self) -> bool:
        # On a Cluster a batch is one call after the other anyway: no gain in batching.
        return not self.cluster

    async def touch(self, conns: Sequence[Connection], now: float, activity: bool) -> TouchResult:
        # Per shard: the users' keys (1-based position = the index the script uses)
        # and six arguments per connection.
        shards: dict[int, tuple[dict[str, int], list[Any]]] = {}
        for c in conns:
            index, args = shards.setdefault(
                self.shard(c.user_id), ({}, self._args("touch", now, "1" if activity else "0"))
            )
            position = index.setdefault(c.user_id, len(index) + 1)
            args += [position, c.user_id, c.sid, c.namespace, c.device, c.node]
        calls = [
            (shard, [self.user_key(uid) for uid in index], args)
            for shard, (index, args) in shards.items()
        ]
        changes: list[PublicView] = []
        statuses: dict[str, str] = {}
        unavailable: set[str] = set()
        replies = await self._run_many(calls)
        for (index, _args), reply in zip(shards.values(), replies, strict=True):
            if reply is None:  # that shard's master is down (Redis Cluster)
                unavailable.update(index)
                continue
            result, shard_changes = reply
            changes += _changes(shard_changes, now)
            statuses.update(
                (uid.decode(), status.decode()) for uid, status in _pairs(result).items()
            )
        return TouchResult(changes, statuses, frozenset(unavailable))

    async def disconnect(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        result, changes = await self._run(
            self.shard(user_id),
            [self.user_key(user_id)],
            self._args("disconnect", now, user_id, sid),
        )
        return DisconnectResult(_changes(changes, now), _num(result[0]))

    async def disconnect_after_outage(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        result, changes = await self._run(
            self.shard(user_id),
            [self.user_key(user_id)],
            self._args("disconnect_after_outage", now, user_id, sid),
        )
        return DisconnectResult(_changes(changes, now), _num(result[0]))

    async def node_heartbeat(
        self, node: str, now: float, node_ttl: float, forget: Sequence[str] = ()
    ) -> list[str]:
        key = f"{self.prefix}:nodes"
        async with self._guard():
            pipe = self.redis.pipeline(transaction=False)
            if forget:
                pipe.zrem(key, *forget)
            pipe.zadd(key, {node: now + node_ttl})
            pipe.zrangebyscore(key, "-inf", f"({now!r}", start=0, num=DEAD_NODES_MAX)
            replies = await pipe.execute()
        return [n.decode() for n in replies[-1]]

    async def settle_nodes(self, nodes: Sequence[str], now: float, limit: int) -> NodeSweep:
        """Each shard's script drops the dead nodes' connections, in one pipeline."""
        if not nodes:
            return NodeSweep([], frozenset())
        calls = [
            (shard, [], self._args("drop_nodes", now, limit, f"{self._tag(shard)}:u:", *nodes))
            for shard in range(self.shards)
        ]
        changes: list[PublicView] = []
        remaining: set[str] = set()
        for reply in await self._run_many(calls):
            if reply is None:  # that shard's master is down (Redis Cluster): all still to do
                remaining.update(nodes)
                continue
            result, shard_changes = reply
            changes += _changes(shard_changes, now)
            remaining.update(n.decode() for n in result)
        return NodeSweep(changes, frozenset(remaining))

    async def settle(self, user_ids: Sequence[str], now: float) -> list[PublicView]:
        calls = [
            (shard, [self.user_key(uid) for uid in ids], self._args("settle", now, *ids))
            for shard, ids in self._by_shard(user_ids).items()
        ]
        return _answered_changes(await self._run_many(calls), now)

    async def sweep(self, now: float, limit: int) -> list[PublicView]:
        """Settle due users of every shard, up to ``limit`` per shard, in one round trip."""
        calls = [
            (shard, [], self._args("sweep", now, limit, f"{self._tag(shard)}:u:"))
            for shard in range(self.shards)
        ]
        return _answered_changes(await self._run_many(calls), now)

    async def set_status(
        self, user_id: str, status: str, now: float
    ) -> tuple[PresenceRecord, list[PublicView]]:
        result, changes = await self._run(
            self.shard(user_id),
            [self.user_key(user_id)],
            self._args("set_status", now, user_id, status),
        )
        record = state_from_hash(_pairs(result)).record(user_id, now)
        return record, _changes(changes, now)

    async def get_many(self, user_ids: Sequence[str], now: float) -> dict[str, PresenceRecord]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        async with self._guard():
            pipe = self.redis.pipeline(transaction=False)
            for user_id in ids:
                pipe.hgetall(self.user_key(user_id))
            hashes = await pipe.execute()
        return {
            uid: state_from_hash(flat).record(uid, now) if flat else offline_record(uid)
            for uid, flat in zip(ids, hashes, strict=True)
        }

    async def _per_shard(self, command: str, *args: Any) -> list[Any]:
        async with self._guard():
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(self.shards):
                key = self._index_keys(shard)[0 if command != "hgetall" else 2]
                getattr(pipe, command)(key, *args)
            return await pipe.execute()

    async def online_count(self) -> int:
        return sum(await self._per_shard("zcard"))

    async def online_users(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        # Each shard's next limit+1 ids after the cursor hold the global next limit+1.
        low = b"-" if cursor is None else b"(" + cursor.encode()
        pages = await self._per_shard("zrangebylex", low, b"+", 0, limit + 1)
        merged = sorted(uid for page in pages for uid in page)
        page = [uid.decode() for uid in merged[:limit]]
        return page, (page[-1] if len(merged) > limit and page else None)

    async def stats(self, now: float) -> PresenceStats:
        async with self._guard():
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(self.shards):
                online, _due, ns = self._index_keys(shard)
                pipe.zcard(online)
                pipe.hgetall(ns)
            replies = await pipe.execute()
        online_users = sum(replies[0::2])
        by_namespace: dict[str, int] = {}
        for counts in replies[1::2]:
            for ns, n in counts.items():
                by_namespace[ns.decode()] = by_namespace.get(ns.decode(), 0) + int(n)
        by_namespace = {ns: n for ns, n in by_namespace.items() if n > 0}
        return PresenceStats(online_users, sum(by_namespace.values()), by_namespace)


@hookimpl
def register_backends(register) -> None:
    register("redis", RedisBackend)
