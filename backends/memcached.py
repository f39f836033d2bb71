"""Memcached presence backend (pymemcache), for deployments that already run memcached.

Memcached has no sets, no scans and no scripts, so the design is built from
``gets``/``cas`` only (see docs/backends.md, "Memcached"):

* One record per user (``<prefix>:u:<id>``): the :class:`UserState` JSON plus a
  version, and the index entry that version asked for. Every change is a
  gets/cas retry loop around the pure state machine, so the cas that lands
  decides each online/offline transition: exactly one caller announces it.
* An online and deadline index in ``index_buckets`` bucket keys
  (``<prefix>:b:<n>``), each a JSON map user -> [version, online, check_at,
  {namespace: connections}], also updated with cas. Entries carry the user
  record's version and only a newer version replaces them (removals leave a
  short-lived tombstone), so bucket writes racing from many nodes converge to
  the latest record. ``check_at`` is a lower bound of the user's deadline: a
  refresh that only pushes the deadline later leaves the bucket alone, and the
  sweeper moves ``check_at`` forward when it finds nothing due.
* Several servers on a fixed ring: a user's record goes to a server by
  rendezvous hashing, and its bucket is one of the buckets that live on that
  same server, so one user's operation touches one server. A dead server's
  keys are never re-mapped; calls for them raise ``BackendUnavailable``.
* Multi-user operations (``touch``, ``settle``, ``sweep``) work server by
  server and user by user: a user whose server is down, or whose cas retries
  run out, is skipped (``touch`` reports it in ``TouchResult.unavailable``),
  and every write that did land is still returned and indexed, so no decided
  transition goes unannounced.

pymemcache is blocking: each operation runs whole (all its round trips) in a
bounded thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError

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

T = TypeVar("T")
log = logging.getLogger("sanic_rt.backends.memcached")

#: memcached reads an exptime above 30 days as an absolute unix time.
MAX_RELATIVE_EXPTIME = 30 * 24 * 3600
#: a bucket tombstone only has to outlive a racing writer's in-flight bucket update.
TOMBSTONE_KEEP = 120.0
#: bound on the users one sweep() call settles, in chunks of ``limit``.
SWEEP_MAX_CHUNKS = 10
BUCKET_CACHE_SIZE = 200_000
_SAFE_KEY_PART = re.compile(r"^[\x21-\x7e]{1,200}$")
_SAFE_PREFIX = re.compile(r"^[\x21-\x7e]{1,40}$")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _parse_server(spec: str, source: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            source, "presence.memcached.servers", f'expected "host:port", got {spec!r}'
        )
    return host, int(port)


@dataclass
class _Loaded:
    """One user's record as read: state, cas token, version, index entry and when it was written."""

    state: UserState
    cas: bytes | None
    version: int
    index: list[Any] | None
    indexed_at: float
    exists: bool


@dataclass
class _Updated:
    """What one gets/cas pass over several users achieved.

    ``results``: user -> (its visible change, if any, state after, apply's result), for
    every user whose write landed or needed none. ``failed``: user -> why not
    (server down, cas retries exhausted); those users were left as they were.
    """

    results: dict[str, tuple[list[PublicView], UserState, Any]]
    failed: dict[str, str]

    def changes(self, user_ids: Sequence[str]) -> list[PublicView]:
        """The visible changes of these users' writes that landed, in their order."""
        out: list[PublicView] = []
        for user_id in user_ids:
            if user_id in self.results:
                out += self.results[user_id][0]
        return out

    def one(self, user_id: str) -> tuple[list[PublicView], UserState, Any] | None:
        """The result of a single-user operation, which has no batch to report into."""
        if user_id in self.failed:
            raise BackendUnavailable(self.failed[user_id])
        return self.results.get(user_id)


class _Server:
    """One memcached server: a connection pool, bounded so threads wait instead of failing."""

    def __init__(self, host: str, port: int, pool_size: int, timeout: float) -> None:
        self.name = f"{host}:{port}"
        self.timeout = timeout
        self.client = PooledClient(
            (host, port),
            connect_timeout=timeout,
            timeout=timeout,
            no_delay=True,
            max_pool_size=pool_size,
            default_noreply=False,
        )
        # PooledClient raises when its pool is exhausted; a semaphore of the
        # same size makes a surplus thread wait (up to the timeout) instead.
        self._slots = threading.BoundedSemaphore(pool_size)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self._slots.acquire(timeout=self.timeout):
            raise BackendUnavailable(f"memcached {self.name}: no free connection in time")
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except (OSError, MemcacheError) as err:
            raise BackendUnavailable(f"memcached {self.name}: {type(err).__name__}") from None
        finally:
            self._slots.release()

    def close(self) -> None:
        self.client.close()


class MemcachedBackend(PresenceBackend):
    name = "memcached"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mc = self.config.presence.memcached
        source = self.config.source
        if not mc.servers:
            raise ConfigError(source, "presence.memcached.servers", "expected at least one server")
        if not _SAFE_PREFIX.match(mc.key_prefix):
            raise ConfigError(
                source,
                "presence.memcached.key_prefix",
                "expected 1-40 printable ASCII characters without spaces",
            )
        self.mc = mc
        self.prefix = mc.key_prefix
        # Sorted, so that every node builds the same ring whatever the list order.
        self.addresses = sorted({_parse_server(s, source) for s in mc.servers})
        self.servers: list[_Server] = []
        self._executor: ThreadPoolExecutor | None = None
        presence = self.config.presence
        self.record_exptime = int(
            min(MAX_RELATIVE_EXPTIME, max(presence.record_ttl, 10 * self.timings.ttl))
        )
        # Buckets are spread round-robin over the sorted servers; each user's
        # bucket is one on the server holding the user's record.
        self.bucket_keys = [f"{self.prefix}:b:{i}" for i in range(mc.index_buckets)]
        self._buckets_on: dict[int, list[int]] = defaultdict(list)
        for i in range(mc.index_buckets):
            self._buckets_on[i % len(self.addresses)].append(i)
        #: called as ``on_call(command)`` in the worker thread before each memcached
        #: command; tests use it to check that no command runs on the event loop.
        self.on_call: Callable[[str], None] | None = None
        self._bucket_cache: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self.servers = [
            _Server(host, port, self.mc.pool_size, self.mc.timeout) for host, port in self.addresses
        ]
        self._executor = ThreadPoolExecutor(self.mc.threads, thread_name_prefix="memcached")

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # In-flight calls end within their socket timeout; wait for them off the loop.
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        for server in self.servers:
            server.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking operation (all its round trips) on the bounded pool."""
        if self._executor is None:
            raise BackendUnavailable("memcached backend not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # --- keys and the ring ---------------------------------------------------------

    def user_key(self, user_id: str) -> str:
        # Memcached keys are ASCII without spaces, at most 250 bytes; other ids are hashed.
        if _SAFE_KEY_PART.match(user_id):
            return f"{self.prefix}:u:{user_id}"
        return f"{self.prefix}:h:{hashlib.sha256(user_id.encode()).hexdigest()[:40]}"

    def server_index_of_user(self, user_id: str) -> int:
        """Rendezvous hashing over the fixed server list: a dead server's users stay on it."""
        key = self.user_key(user_id)
        return max(
            range(len(self.addresses)),
            key=lambda i: _hash64(f"{self.addresses[i][0]}:{self.addresses[i][1]}/{key}"),
        )

    def bucket_of_user(self, user_id: str) -> int:
        bucket = self._bucket_cache.get(user_id)
        if bucket is None:
            local = self._buckets_on.get(self.server_index_of_user(user_id))
            if not local:  # fewer buckets than servers: any bucket
                bucket = _hash64(user_id) % len(self.bucket_keys)
            else:
                bucket = local[_hash64(user_id) % len(local)]
            # The sweeper checks every entry's bucket on every pass; hashing runs
            # under the GIL, so remember recent answers (bounded).
            if len(self._bucket_cache) >= BUCKET_CACHE_SIZE:
                self._bucket_cache.clear()
            self._bucket_cache[user_id] = bucket
        return bucket

    def server_index_of_bucket(self, bucket: int) -> int:
        return bucket % len(self.addresses)

    def _cmd(self, server: int, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.on_call is not None:
            self.on_call(method)
        return self.servers[server].call(method, *args, **kwargs)

    def _gets_users(
        self, user_ids: Iterable[str], dead: dict[int, str]
    ) -> dict[str, tuple[bytes, bytes] | None]:
        """One ``gets_many`` per server; users of an unreachable server are left out.

        A server that fails is added to ``dead`` (server -> error) instead of
        failing the whole call, so the other servers' users still get an
        answer; servers already in ``dead`` are not asked again.
        """
        by_server: dict[int, list[str]] = defaultdict(list)
        for user_id in user_ids:
            by_server[self.server_index_of_user(user_id)].append(user_id)
        out: dict[str, tuple[bytes, bytes] | None] = {}
        for server, ids in by_server.items():
            if server in dead:
                continue
            keys = {self.user_key(u): u for u in ids}
            try:
                found = self._cmd(server, "gets_many", list(keys))
            except BackendUnavailable as err:
                dead[server] = str(err)
                continue
            for key, user_id in keys.items():
                out[user_id] = found.get(key)
        return out

    def _store(self, server: int, key: str, value: bytes, cas: bytes | None, exptime: int) -> bool:
        """cas, or add for a new key; False when someone else wrote first."""
        if cas is None:
            return bool(self._cmd(server, "add", key, value, expire=exptime, noreply=False))
        return bool(self._cmd(server, "cas", key, value, cas, expire=exptime, noreply=False))

    def _backoff(self, attempt: int) -> None:
        # Jitter so that racing writers (threads here, other nodes) stop colliding.
        time.sleep(random.uniform(0, 0.0005 * (2 ** min(attempt, 5))))

    # --- records -----------------------------------------------------------------

    def _load(self, raw: tuple[bytes, bytes] | None) -> _Loaded:
        if raw is None or raw[0] is None:
            return _Loaded(UserState(), None, 0, None, 0.0, False)
        data = json.loads(raw[0])
        return _Loaded(UserState.from_json(data), raw[1], data["v"], data["x"], data["w"], True)

    def _index_entry(self, state: UserState, previous: list[Any] | None, now: float, force: bool):
        """The user's bucket entry: [online, check_at, {namespace: n}, [nodes]] or None.

        The nodes holding the user's connections let a survivor find a dead
        node's users in the index (entries written before node ids lack them).
        """
        deadline = state.deadline(self.timings)
        if not state.online and deadline is None:
            return None
        if deadline is None:  # online with nothing pending cannot happen; check back anyway
            deadline = now + self.timings.ttl
        counts = Counter(c[1] for c in state.conns.values() if c[0] > now)
        check_at = deadline
        if previous is not None and not force and now < previous[1] <= deadline:
            # A later deadline needs no bucket write: the sweeper finds the user
            # at the old one, sees nothing due, and moves check_at then.
            check_at = previous[1]
        nodes = sorted({c[3] for c in state.conns.values() if len(c) > 3 and c[3]})
        return [1 if state.online else 0, check_at, dict(sorted(counts.items())), nodes]

    def _update_users(
        self,
        user_ids: Sequence[str],
        apply: Callable[[str, UserState], Any],
        now: float,
        *,
        create: bool = True,
        force_index: bool = False,
    ) -> _Updated:
        """The gets/cas loop: apply ``apply`` to each user's state until every cas lands.

        Users whose server is unreachable, or whose cas retries run out, are
        given up on one by one (``failed``) rather than failing the batch:
        the other users' writes may already have landed, and the transitions
        they decided must reach the caller to be announced. Then writes the
        bucket entries of the users whose records changed.
        """
        results: dict[str, tuple[list[PublicView], UserState, Any]] = {}
        failed: dict[str, str] = {}
        index_writes: dict[str, tuple[int, list[Any] | None]] = {}
        # Servers found unreachable during this call: not asked again, so a hung
        # server costs one timeout per call rather than one per user.
        dead: dict[int, str] = {}
        pending = list(dict.fromkeys(user_ids))
        for attempt in range(self.mc.max_cas_retries):
            if not pending:
                break
            if attempt:
                self._backoff(attempt)
            raws = self._gets_users(pending, dead)
            retry: list[str] = []
            for user_id in pending:
                server = self.server_index_of_user(user_id)
                if server in dead:
                    failed[user_id] = dead[server]
                    continue
                loaded = self._load(raws.get(user_id))
                state = loaded.state
                if not loaded.exists and not create and not force_index:
                    continue
                # Encoded now: to_json() shares the conns dict that apply() mutates.
                before_json = _JSON.encode(state.to_json()) if loaded.exists else None
                before = state.public_view(user_id)
                outcome = apply(user_id, state)
                # Numbered here, so the seq is stored by the same cas as the change.
                changes = state.announce(user_id, before, now)
                entry = self._index_entry(state, loaded.index, now, force_index)
                stale = entry is not None and now - loaded.indexed_at >= self.timings.ttl
                write_index = force_index or entry != loaded.index or stale
                state_json = state.to_json()
                if not loaded.exists and ((state.is_empty() and not create) or outcome is False):
                    # Nothing to keep for an unknown user (a refused connect, a
                    # sweep of a lost record): only the index may need a tombstone.
                    results[user_id] = (changes, state, outcome)
                    if write_index and force_index:
                        index_writes[user_id] = (max(1, int(now * 1000)), entry)
                    continue
                if _JSON.encode(state_json) == before_json and not write_index:
                    results[user_id] = (changes, state, outcome)
                    continue
                # Versions only grow, and start from the clock, so a record
                # lost and re-created still out-ranks its old bucket entry.
                version = max(loaded.version + 1, int(now * 1000))
                record = {
                    **state_json,
                    "v": version,
                    "x": entry,
                    "w": now if write_index else loaded.indexed_at,
                }
                value = _JSON.encode(record).encode()
                key = self.user_key(user_id)
                try:
                    stored = self._store(server, key, value, loaded.cas, self.record_exptime)
                except BackendUnavailable as err:
                    # The server went away between gets and cas. (A timeout cannot
                    # tell whether the write landed; the user is reported failed.)
                    dead[server] = failed[user_id] = str(err)
                    continue
                if stored:
                    results[user_id] = (changes, state, outcome)
                    if write_index:
                        index_writes[user_id] = (version, entry)
                else:
                    retry.append(user_id)
            pending = retry
        for user_id in pending:
            failed[user_id] = (
                f"memcached: {self.mc.max_cas_retries} cas attempts failed for user {user_id!r}"
            )
        if index_writes:
            # The user records have changed, so their transitions must be announced
            # whatever happens to the index: it catches up at the next refresh
            # (entries are re-asserted once a ttl) or the next change.
            self._write_index(index_writes, now, dead=dead)
        return _Updated(results, failed)

    # --- the index ---------------------------------------------------------------

    def _write_index(
        self,
        writes: dict[str, tuple[int, list[Any] | None]],
        now: float,
        drop: Iterable[tuple[int, str]] = (),
        dead: dict[int, str] | None = None,
    ) -> None:
        """Apply versioned entries (None = remove) bucket by bucket, each with a cas loop.

        ``drop`` removes (bucket, user) entries outright: entries found in a
        bucket that is not the user's (after a change of the server list).
        Best effort, bucket by bucket: a bucket that cannot be written (its
        server down, ``dead`` holding servers already known down, or its cas
        retries exhausted) is logged and skipped, and the others are written.
        """
        dead = {} if dead is None else dead
        by_bucket: dict[int, dict[str, tuple[int, list[Any] | None]]] = defaultdict(dict)
        for user_id, write in writes.items():
            by_bucket[self.bucket_of_user(user_id)][user_id] = write
        drops: dict[int, list[str]] = defaultdict(list)
        for bucket, user_id in drop:
            drops[bucket].append(user_id)
            by_bucket.setdefault(bucket, {})
        skipped: list[str] = []
        for bucket, updates in by_bucket.items():
            server = self.server_index_of_bucket(bucket)
            if server in dead:
                skipped.append(f"bucket {bucket}: {dead[server]}")
                continue
            try:
                if not self._cas_bucket(bucket, updates, drops.get(bucket, []), now):
                    skipped.append(
                        f"bucket {bucket}: {self.mc.max_cas_retries} cas attempts failed"
                    )
            except BackendUnavailable as err:
                dead[server] = str(err)
                skipped.append(f"bucket {bucket}: {err}")
        if skipped:
            log.warning("presence index not updated: %s", "; ".join(skipped))

    def _cas_bucket(
        self,
        bucket: int,
        updates: dict[str, tuple[int, list[Any] | None]],
        drops: list[str],
        now: float,
    ) -> bool:
        """One bucket's cas loop; False when its retries run out (raises when unreachable)."""
        key = self.bucket_keys[bucket]
        server = self.server_index_of_bucket(bucket)
        for attempt in range(self.mc.max_cas_retries):
            if attempt:
                self._backoff(attempt)
            raw = self._cmd(server, "gets_many", [key]).get(key)
            data = json.loads(raw[0]) if raw else {"e": {}, "t": {}}
            entries, tombs = data["e"], data["t"]
            changed = False
            for user_id, (version, entry) in updates.items():
                current = max(
                    entries[user_id][0] if user_id in entries else -1,
                    tombs[user_id][0] if user_id in tombs else -1,
                )
                if version <= current:
                    continue  # a newer record version already wrote this entry
                changed = True
                if entry is None:
                    entries.pop(user_id, None)
                    tombs[user_id] = [version, now]
                else:
                    tombs.pop(user_id, None)
                    entries[user_id] = [version, *entry]
            for user_id in drops:
                if entries.pop(user_id, None) is not None:
                    changed = True
            expired = [u for u, (_v, at) in tombs.items() if at < now - TOMBSTONE_KEEP]
            for user_id in expired:
                del tombs[user_id]
            if not changed and not expired:
                return True
            value = _JSON.encode(data).encode()
            if self._store(server, key, value, raw[1] if raw else None, MAX_RELATIVE_EXPTIME):
                return True
        return False

    def _read_index(self, partial: bool = False) -> list[tuple[int, dict[str, list[Any]]]]:
        """Every bucket's entries, one multi-get per server.

        Counts and listings need all of them: any server down means no answer
        rather than a wrong one. With ``partial`` (the sweeper, which can settle
        the live servers' users without the dead one's buckets) the buckets of
        unreachable servers are left out, and only all of them down raises.
        """
        by_server: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.bucket_keys)):
            by_server[self.server_index_of_bucket(i)].append(i)
        out = []
        error: BackendUnavailable | None = None
        for server, buckets in by_server.items():
            try:
                found = self._cmd(server, "get_many", [self.bucket_keys[i] for i in buckets])
            except BackendUnavailable as err:
                if not partial:
                    raise
                error = err
                continue
            for i in buckets:
                raw = found.get(self.bucket_keys[i])
                out.append((i, json.loads(raw)["e"] if raw else {}))
        if error is not None and not out:
            raise error
        return out

    def _online_ids(self) -> list[str]:
        return sorted(u for _b, entries in self._read_index() for u, e in entries.items() if e[1])

    # --- interface ---------------------------------------------------------------

    async def check(self) -> None:
        def ping() -> None:
            for i in range(len(self.servers)):
                self._cmd(i, "version")

        await self._run(ping)

    async def connect(self, conn: Connection, now: float, max_connections: int) -> ConnectResult:
        def apply(_user: str, state: UserState) -> bool:
            return state.connect(conn, now, self.timings, max_connections)

        def run() -> ConnectResult:
            one = self._update_users([conn.user_id], apply, now).one(conn.user_id)
            assert one is not None  # created when missing, so always a result
            changes, _state, accepted = one
            if not accepted:
                return ConnectResult(False, [])
            return ConnectResult(True, changes)

        return await self._run(run)

    async def touch(self, conns: Sequence[Connection], now: float, activity: bool) -> TouchResult:
        by_user: dict[str, list[Connection]] = defaultdict(list)
        for conn in conns:
            by_user[conn.user_id].append(conn)

        def apply(user_id: str, state: UserState) -> None:
            for conn in by_user[user_id]:
                state.touch(conn, now, self.timings, activity)

        def run() -> TouchResult:
            updated = self._update_users(list(by_user), apply, now)
            if updated.failed and not updated.results:
                # Nothing landed, so nothing is lost by failing the call as a whole.
                raise BackendUnavailable(next(iter(updated.failed.values())))
            changes: list[PublicView] = []
            statuses: dict[str, str] = {}
            for user_id, (user_changes, state, _) in updated.results.items():
                changes += user_changes
                statuses[user_id] = state.effective_status()
            return TouchResult(changes, statuses, frozenset(updated.failed))

        return await self._run(run)

    async def disconnect(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        def apply(_user: str, state: UserState) -> None:
            state.disconnect(sid, now, self.timings)

        def run() -> DisconnectResult:
            one = self._update_users([user_id], apply, now, create=False).one(user_id)
            if one is None:
                return DisconnectResult([], None)
            changes, state, _ = one
            return DisconnectResult(changes, state.grace_until)

        return await self._run(run)

    async def disconnect_after_outage(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        def apply(_user: str, state: UserState) -> None:
            state.disconnect_after_outage(sid, now, self.timings)

        def run() -> DisconnectResult:
            # create: a lost record is written back offline (add), so that of
            # several nodes settling such a disconnect only one sees the change.
            one = self._update_users([user_id], apply, now).one(user_id)
            assert one is not None  # created when missing, so always a result
            changes, state, _ = one
            return DisconnectResult(changes, state.grace_until)

        return await self._run(run)

    async def node_heartbeat(
        self, node: str, now: float, node_ttl: float, forget: Sequence[str] = ()
    ) -> list[str]:
        """The registry is one item (node -> alive until) on the first server, updated by cas."""

        def run() -> list[str]:
            key = f"{self.prefix}:nodes"
            for attempt in range(self.mc.max_cas_retries):
                if attempt:
                    self._backoff(attempt)
                raw = self._cmd(0, "gets_many", [key]).get(key)
                nodes = json.loads(raw[0]) if raw else {}
                for gone in forget:
                    if nodes.get(gone, now) < now:
                        del nodes[gone]
                nodes[node] = now + node_ttl
                value = _JSON.encode(nodes).encode()
                if self._store(0, key, value, raw[1] if raw else None, MAX_RELATIVE_EXPTIME):
                    return sorted(n for n, alive_until in nodes.items() if alive_until < now)
            raise BackendUnavailable(f"memcached: {self.mc.max_cas_retries} cas attempts failed")

        return await self._run(run)

    async def settle_nodes(self, nodes: Sequence[str], now: float, limit: int) -> NodeSweep:
        """Find the dead nodes' users in the index buckets (their entries name the nodes)."""
        dead = frozenset(nodes)

        def run() -> NodeSweep:
            held: list[tuple[str, frozenset[str]]] = []
            for _bucket, entries in self._read_index(partial=True):
                for user_id, (_v, _online, _check_at, *rest) in entries.items():
                    found = dead.intersection(rest[1] if len(rest) > 1 else ())
                    if found:
                        held.append((user_id, found))
            chosen, later = held[:limit], held[limit:]

            def apply(_user: str, state: UserState) -> None:
                state.drop_nodes(dead, now, self.timings)

            ids = [user_id for user_id, _ in chosen]
            updated = self._update_users(ids, apply, now, create=False, force_index=True)
            # Users given up on (server down, cas races) stay in the index: next time.
            remaining = {n for user_id, found in later for n in found}
            remaining.update(
                n for user_id, found in chosen if user_id in updated.failed for n in found
            )
            return NodeSweep(updated.changes(ids), frozenset(remaining))

        return await self._run(run)

    def _settle(
        self, user_ids: Sequence[str], now: float, force_index: bool
    ) -> tuple[list[PublicView], dict[str, str]]:
        """The changes that landed, and the users that could not be settled (and why)."""

        def apply(_user: str, state: UserState) -> None:
            state.settle(now, self.timings)

        updated = self._update_users(user_ids, apply, now, create=False, force_index=force_index)
        return updated.changes(user_ids), updated.failed

    async def settle(self, user_ids: Sequence[str], now: float) -> list[PublicView]:
        def run() -> list[PublicView]:
            ids = list(dict.fromkeys(user_ids))
            changes, failed = self._settle(ids, now, False)
            # A user that failed is settled by a later sweep (its deadline stays
            # in the index), so only a call that achieved nothing is an error.
            if ids and len(failed) == len(ids):
                raise BackendUnavailable(next(iter(failed.values())))
            return changes

        return await self._run(run)

    async def sweep(self, now: float, limit: int) -> list[PublicView]:
        def run() -> list[PublicView]:
            due: list[tuple[float, str]] = []
            misplaced: list[tuple[int, str]] = []
            # A dead server's buckets wait for its return; the live servers'
            # users are still settled (their deadlines pass meanwhile).
            for bucket, entries in self._read_index(partial=True):
                for user_id, (_v, _online, check_at, *_counts_nodes) in entries.items():
                    if self.bucket_of_user(user_id) != bucket:
                        misplaced.append((bucket, user_id))
                    elif check_at <= now:
                        due.append((check_at, user_id))
            if misplaced:
                self._write_index({}, now, drop=misplaced)
            due.sort()
            changes: list[PublicView] = []
            tried = 0
            failed: dict[str, str] = {}
            # Most due users only need check_at moved (their deadline was pushed
            # by a refresh), so go on past them, in bounded chunks, until
            # ``limit`` visible changes are found.
            for chunk in range(SWEEP_MAX_CHUNKS):
                ids = [u for _t, u in due[chunk * limit : (chunk + 1) * limit]]
                if not ids or len(changes) >= limit:
                    break
                chunk_changes, chunk_failed = self._settle(ids, now, force_index=True)
                changes += chunk_changes
                failed |= chunk_failed
                tried += len(ids)
            # Failed users stay due in the index and are retried by the next sweep.
            if tried and len(failed) == tried:
                raise BackendUnavailable(next(iter(failed.values())))
            return changes

        return await self._run(run)

    async def set_status(
        self, user_id: str, status: str, now: float
    ) -> tuple[PresenceRecord, list[PublicView]]:
        def apply(_user: str, state: UserState) -> None:
            state.set_status(status, now)

        def run() -> tuple[PresenceRecord, list[PublicView]]:
            one = self._update_users([user_id], apply, now).one(user_id)
            assert one is not None  # created when missing, so always a result
            changes, state, _ = one
            return state.record(user_id, now), changes

        return await self._run(run)

    async def get_many(self, user_ids: Sequence[str], now: float) -> dict[str, PresenceRecord]:
        def run() -> dict[str, PresenceRecord]:
            dead: dict[int, str] = {}
            raws = self._gets_users(user_ids, dead)
            if dead:
                # The interface has no per-user "unknown" here, and a missing
                # record would read as offline: no answer rather than a wrong one.
                raise BackendUnavailable(next(iter(dead.values())))
            out = {}
            for user_id in user_ids:
                loaded = self._load(raws.get(user_id))
                out[user_id] = (
                    loaded.state.record(user_id, now) if loaded.exists else offline_record(user_id)
                )
            return out

        return await self._run(run)

    async def online_count(self) -> int:
        return len(await self._run(self._online_ids))

    async def online_users(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        ids = await self._run(self._online_ids)
        start = 0 if cursor is None else bisect.bisect_right(ids, cursor)
        page = ids[start : start + limit]
        more = start + limit < len(ids)
        return page, (page[-1] if more and page else None)

    async def stats(self, now: float) -> PresenceStats:
        def run() -> PresenceStats:
            users = 0
            by_namespace: Counter[str] = Counter()
            for _bucket, entries in self._read_index():
                for _v, online, _check_at, counts, *_nodes in entries.values():
                    if online:
                        users += 1
                        by_namespace.update(counts)
            return PresenceStats(users, sum(by_namespace.values()), dict(by_namespace))

        return await self._run(run)


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    register("memcached", MemcachedBackend)
