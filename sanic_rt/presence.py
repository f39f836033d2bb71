"""The presence API: one object per app, the only way anything touches presence.

It keeps this node's live connections, refreshes them itself (in batches,
every ttl/3) so that presence follows the real connection, sweeps expired
users (a crashed node's included), runs the offline-grace timers, and hands
every visible change to one publisher.

Outages and crashes (docs/backends.md, "Outages and node crashes"): once the
storage has answered for half a ttl after an outage (every node's refresh has
re-registered its registered connections by then), the disconnects that failed
meanwhile are settled, and the connections accepted meanwhile (under the
per-user cap counted on this node) are registered through ``connect``, which
applies the cap cluster-wide. Each process also beats a node liveness entry
every ``node_ttl/3``, so a survivor settles a dead node's connections without
waiting for their ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from . import metrics
from .backend import (
    BackendUnavailable,
    ConnectResult,
    PresenceBackend,
    PresenceStats,
    TouchResult,
)
from .coalesce import Coalescer
from .config import PresenceConfig
from .presence_model import STATUSES, Connection, PresenceRecord, PublicView
from .tasks import BackgroundTasks

log = logging.getLogger("sanic_rt.presence")

Publisher = Callable[[list[PublicView]], Awaitable[None]]
#: closes a client's connection, telling it why: (connection, code, message)
Evictor = Callable[[Connection, str, str], Awaitable[None]]
T = TypeVar("T")
SWEEP_LIMIT = 1000
#: bound on the settle_nodes calls of one node heartbeat
NODE_SWEEP_ROUNDS = 10


class TooManyConnections(Exception):
    """:meth:`Presence.connect` refused: the user has ``max_connections_per_user`` already."""


class RateLimitedLog:
    """One warning per interval, not one per failing call."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger, self.interval = logger, interval
        self._last = float("-inf")
        self.suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        extra = f" ({self.suppressed} more suppressed)" if self.suppressed else ""
        self.logger.warning(message + extra, *args)
        self._last, self.suppressed = now, 0


class HeartbeatBatcher:
    """Coalesces concurrent heartbeats into one backend ``touch`` per batch.

    Under load thousands of clients ping at once; one round trip each would
    queue on the connection pool (and time out). Every ping that arrives while
    ``[presence] batches_in_flight`` batches are in flight goes into the next
    one, so a ping is still written within about one round trip, and the
    backend sees one call per batch.
    """

    def __init__(self, presence: Presence) -> None:
        self.presence = presence
        self._batches: Coalescer[Connection, str] = Coalescer(
            self._flush, presence.config.refresh_batch_size, presence.config.batches_in_flight
        )

    async def beat(self, conn: Connection) -> str:
        return await self._batches.submit(conn)

    async def _flush(self, batch: list[Connection]) -> list[str | Exception]:
        result = await self.presence._touch(batch, activity=True)
        return [
            BackendUnavailable(f"storage of {conn.user_id} is down")
            if conn.user_id in result.unavailable
            else result.statuses.get(conn.user_id, "online")
            for conn in batch
        ]

    async def close(self) -> None:
        await self._batches.close(BackendUnavailable("shutting down"))


class Presence:
    """The presence API: one per app, ``gateway.presence`` (``self.presence`` in a namespace).

    Each user has one record, shared by every namespace, device and node. A
    namespace's connections are registered and refreshed by the core; a plugin
    mostly *reads* presence (:meth:`get`, :meth:`get_many`, :meth:`is_online`)
    and may set a user's status (:meth:`set_status`). Every method may raise
    :class:`~sanic_rt.api.BackendUnavailable` while storage is down; inside an
    event handler or an ``/api/`` route that becomes the ``unavailable`` answer
    by itself.
    """

    def __init__(
        self,
        backend: PresenceBackend,
        config: PresenceConfig,
        max_connections: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.config = config
        #: ttl, grace, idle, sweep and node timings: the backend's own object (in
        #: the app, the ``[presence]`` section), so both sides use the same values
        self.timings = backend.timings
        self.max_connections = max_connections
        self.clock = clock
        self.local: dict[str, Connection] = {}  # this node's connections by sid
        self.publisher: Publisher | None = None
        self.evictor: Evictor | None = None
        #: this process's node id, in every connection entry it writes
        self.node = uuid.uuid4().hex[:16]
        self._local_counts: dict[str, int] = {}  # user -> connections in self.local
        #: sids accepted while the storage was down, oldest first, not registered yet
        self._unconfirmed: dict[str, None] = {}
        #: sid -> user of disconnects that failed while the storage was down
        self._pending: dict[str, str] = {}
        #: since when the storage has answered without a failure (None: it is failing)
        self._up_since: float | None = None
        #: when a refresh of every registered connection last completed
        self._refreshed_at: float | None = None
        self._forget_nodes: list[str] = []
        self._warn = RateLimitedLog(log)
        self._warn_dropped = RateLimitedLog(log)  # its own: not hidden by outage warnings
        self._tasks: list[asyncio.Task[None]] = []
        self._grace_timers: dict[str, asyncio.TimerHandle] = {}
        self._activity_flushed: dict[str, float] = {}
        self._heartbeats = HeartbeatBatcher(self)
        # A connect storm: concurrent connects share one backend round trip.
        self._connects: Coalescer[Connection, ConnectResult] = Coalescer(
            self._connect_batch, config.refresh_batch_size, config.batches_in_flight
        )
        self._background = BackgroundTasks()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the backend and the refresh and sweep jobs (the app does this)."""
        await self.backend.start()
        self._tasks = [
            asyncio.create_task(self._every(self.timings.ttl / 3, self.refresh_local)),
            asyncio.create_task(self._every(self.timings.sweep_interval, self.sweep)),
            asyncio.create_task(self._every(self.timings.node_ttl / 3, self.beat_node)),
        ]

    async def close(self) -> None:
        """Stop the jobs and leave this node's users in their grace (the app does this)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._background.cancel_all()
        for timer in self._grace_timers.values():
            timer.cancel()
        await self._heartbeats.close()
        await self._connects.close(BackendUnavailable("shutting down"))
        # Leave this node's users in their grace, so that a reconnect to another
        # node announces nothing and the sweeper settles the rest.
        for conn in list(self.local.values()):
            with contextlib.suppress(BackendUnavailable):
                await self.disconnect(conn.user_id, conn.sid, schedule=False)
        await self.backend.close()

    async def _every(self, interval: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except BackendUnavailable:
                pass  # already warned by _call
            except Exception:
                log.exception("presence job %s failed", job.__name__)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that arrived during the job was swallowed on its way
                # (a Redis client's cleanup can); the loop must still stop, or
                # close() waits for it for ever.
                raise asyncio.CancelledError

    # --- the backend boundary ----------------------------------------------------

    async def _call(self, coro: Awaitable[T]) -> T:
        started = metrics.now()
        try:
            result = await coro
        except BackendUnavailable as err:
            metrics.backend_op(self.backend.name, coro, metrics.now() - started, failed=True)
            self._up_since = None
            self._warn.warning("presence backend %s unavailable: %s", self.backend.name, err)
            raise
        metrics.backend_op(self.backend.name, coro, metrics.now() - started, failed=False)
        if self._up_since is None:
            self._up_since = self.clock()
        return result

    def _up_for(self, seconds: float) -> bool:
        """Whether the storage has answered every call for at least ``seconds``."""
        return self._up_since is not None and self.clock() - self._up_since >= seconds

    # --- this node's connections ---------------------------------------------------

    def _add_local(self, conn: Connection) -> None:
        if conn.sid not in self.local:
            self._local_counts[conn.user_id] = self._local_counts.get(conn.user_id, 0) + 1
        self.local[conn.sid] = conn

    def forget_local(self, sid: str) -> Connection | None:
        """Drop a connection from this node's set (without telling the storage)."""
        conn = self.local.pop(sid, None)
        self._unconfirmed.pop(sid, None)
        if conn is not None:
            left = self._local_counts[conn.user_id] - 1
            if left:
                self._local_counts[conn.user_id] = left
            else:
                del self._local_counts[conn.user_id]
        return conn

    async def _publish(self, changes: list[PublicView]) -> None:
        if changes and self.publisher is not None:
            try:
                await self.publisher(changes)
            except BackendUnavailable as err:
                # The change is decided and stored; only its announcement is lost
                # (the bus is down). The operation itself must not fail for it.
                self._warn.warning("presence change not announced: %s", err)

    async def _touch(self, conns: list[Connection], activity: bool) -> TouchResult:
        """Refresh ``conns``, publish what changed, and undo refreshes that raced a close.

        ``touch`` re-creates missing entries (so presence comes back after a
        storage restart). A connection that closed while its refresh was in
        flight would come back as a ghost for a whole ttl; remove it again.
        """
        result = await self._call(self.backend.touch(conns, self.clock(), activity))
        if result.unavailable:
            self._up_since = None
            self._warn.warning(
                "presence backend %s unavailable for %d users",
                self.backend.name,
                len(result.unavailable),
            )
        await self._publish(result.changes)
        for conn in conns:
            current = self.local.get(conn.sid)
            if current is None or current.user_id != conn.user_id:
                with contextlib.suppress(BackendUnavailable):
                    await self.disconnect(conn.user_id, conn.sid)
        return result

    # --- connections -------------------------------------------------------------

    async def connect(
        self, user_id: str, sid: str, namespace: str, meta: dict[str, Any] | None = None
    ) -> None:
        """Register a connection; raises :class:`TooManyConnections`.

        While the backend is unreachable the connection is accepted if the user
        has fewer than the cap on this node, and kept locally; once the storage
        answers it is registered with the cap applied cluster-wide.
        """
        conn = Connection(user_id, sid, namespace, (meta or {}).get("device", ""), self.node)
        self._add_local(conn)
        try:
            result = await self._connect_one(conn)
        except BackendUnavailable:
            if self._local_counts[user_id] > self.max_connections:
                self.forget_local(sid)
                raise TooManyConnections(user_id) from None
            self._unconfirmed[sid] = None
            return
        if not result.accepted:
            self.forget_local(sid)
            raise TooManyConnections(user_id)
        self._cancel_grace(user_id)
        await self._publish(result.changes)

    async def _connect_one(self, conn: Connection) -> ConnectResult:
        if self.backend.batches_connects:
            return await self._connects.submit(conn)  # the batch goes through _call
        return await self._call(self.backend.connect(conn, self.clock(), self.max_connections))

    async def _connect_batch(self, conns: list[Connection]) -> list[ConnectResult]:
        return await self._call(
            self.backend.connect_many(conns, self.clock(), self.max_connections)
        )

    async def mark_user_online(self, user_id: str, sid: str) -> str:
        """Refresh this connection and count it as activity (what ``ping`` does).

        :param user_id: the connection's user.
        :param sid: the connection's session id.
        :returns: the user's effective status after the refresh.
        """
        conn = self.local.get(sid)
        if conn is None or conn.user_id != user_id:
            conn = Connection(user_id, sid, "", "", self.node)
        elif sid in self._unconfirmed:
            # Registered through connect (the cap applies), never re-created by touch.
            if not self._recovered():
                raise BackendUnavailable("connection accepted during an outage; registering")
            await self._confirm(conn)
        self._activity_flushed[sid] = self.clock()
        return await self._heartbeats.beat(conn)

    async def activity(self, user_id: str, sid: str) -> None:
        """Client activity other than ping; written through at most every few seconds.

        An away user's first activity always passes the throttle: away comes
        only after idle_timeout without activity, longer than the throttle.
        """
        throttle = min(5.0, self.timings.idle_timeout / 4)
        if self.clock() - self._activity_flushed.get(sid, float("-inf")) >= throttle:
            # Not awaited: the event's handler need not wait for the write.
            self._activity_flushed[sid] = self.clock()
            self._background.spawn(self._quietly(self.mark_user_online(user_id, sid)))

    @staticmethod
    async def _quietly(coro: Awaitable[Any]) -> None:
        with contextlib.suppress(BackendUnavailable):
            await coro

    async def disconnect(self, user_id: str, sid: str, schedule: bool = True) -> None:
        """Unregister a connection (the core does this); the last one starts the offline grace.

        If the storage is down, the disconnect is kept and settled on recovery.
        """
        registered = sid not in self._unconfirmed
        self.forget_local(sid)
        self._activity_flushed.pop(sid, None)
        try:
            result = await self._call(self.backend.disconnect(user_id, sid, self.clock()))
        except BackendUnavailable:
            if registered and schedule:
                self._keep_pending(user_id, sid)
            raise
        await self._publish(result.changes)
        if schedule and result.grace_until is not None:
            self._schedule_settle(user_id, result.grace_until)

    def _keep_pending(self, user_id: str, sid: str) -> None:
        if len(self._pending) >= self.config.max_pending_disconnects:
            # Bounded: the entry still expires after ttl where the storage kept it.
            self._warn_dropped.warning(
                "%d disconnects pending ([presence] max_pending_disconnects); one dropped",
                len(self._pending),
            )
            return
        self._pending[sid] = user_id

    def _schedule_settle(self, user_id: str, at: float) -> None:
        self._cancel_grace(user_id)
        delay = max(0.0, at - self.clock()) + 0.01
        loop = asyncio.get_running_loop()
        self._grace_timers[user_id] = loop.call_later(
            delay, lambda: self._background.spawn(self._settle_one(user_id))
        )

    def _cancel_grace(self, user_id: str) -> None:
        timer = self._grace_timers.pop(user_id, None)
        if timer is not None:
            timer.cancel()

    async def _settle_one(self, user_id: str) -> None:
        self._grace_timers.pop(user_id, None)
        with contextlib.suppress(BackendUnavailable):
            await self._publish(await self._call(self.backend.settle([user_id], self.clock())))

    # --- periodic jobs -----------------------------------------------------------

    async def refresh_local(self) -> None:
        """Refresh every registered connection of this node, one round trip per batch."""
        started = self.clock()
        conns = [c for c in self.local.values() if c.sid not in self._unconfirmed]
        size = self.config.refresh_batch_size
        for i in range(0, len(conns), size):
            await self._touch(conns[i : i + size], activity=False)
        self._refreshed_at = started

    @property
    def recovery_window(self) -> float:
        """How long the storage must answer before outage leftovers are settled.

        Every node refreshes its registered connections every ttl/3; half a
        ttl leaves a refresh its own time to run.
        """
        return self.timings.ttl / 2

    def _recovered(self) -> bool:
        """Whether every node has re-registered its connections since the last outage.

        This node: a whole refresh started after the storage came back. The
        others: the storage has answered for the recovery window.
        """
        up_since, refreshed_at = self._up_since, self._refreshed_at
        return (
            self._up_for(self.recovery_window)
            and up_since is not None
            and refreshed_at is not None
            and refreshed_at >= up_since
        )

    async def recover(self) -> None:
        """Settle what an outage left behind, once every node has re-registered.

        First the connections accepted during the outage, oldest first (over
        the cap, the newest are closed), then the disconnects that failed.
        """
        if not (self._unconfirmed or self._pending) or not self._recovered():
            return
        for sid in list(self._unconfirmed)[:SWEEP_LIMIT]:
            conn = self.local.get(sid)
            if conn is not None:
                await self._confirm(conn)
        await self._settle_pending()

    async def _confirm(self, conn: Connection) -> None:
        """Register a connection accepted during an outage; over the cap, close it."""
        result = await self._call(self.backend.connect(conn, self.clock(), self.max_connections))
        self._unconfirmed.pop(conn.sid, None)
        if conn.sid not in self.local:
            # Closed while the call was in flight: remove the entry it just made.
            with contextlib.suppress(BackendUnavailable):
                await self.disconnect(conn.user_id, conn.sid)
            return
        if result.accepted:
            self._cancel_grace(conn.user_id)
            await self._publish(result.changes)
            return
        self.forget_local(conn.sid)
        log.info("closing a connection of user %s over the cap after an outage", conn.user_id)
        if self.evictor is not None:
            limit = self.max_connections
            await self.evictor(conn, "too_many_connections", f"at most {limit} connections")

    async def _settle_pending(self) -> None:
        """Settle the disconnects kept during an outage (see UserState.disconnect_after_outage)."""
        for sid in list(self._pending)[:SWEEP_LIMIT]:
            user_id = self._pending[sid]
            result = await self._call(
                self.backend.disconnect_after_outage(user_id, sid, self.clock())
            )
            del self._pending[sid]
            await self._publish(result.changes)
            if result.grace_until is not None:
                self._schedule_settle(user_id, result.grace_until)

    async def beat_node(self) -> None:
        """Keep this node alive in the storage, and settle the connections of dead nodes.

        Dead nodes are judged only after the storage has answered for a whole
        ``node_ttl``: after an outage every node's liveness has lapsed, and the
        live ones need one beat to renew it.
        """
        forget, self._forget_nodes = self._forget_nodes, []
        now, node_ttl = self.clock(), self.timings.node_ttl
        dead = await self._call(self.backend.node_heartbeat(self.node, now, node_ttl, forget))
        if not dead or not self._up_for(node_ttl):
            return
        for _round in range(NODE_SWEEP_ROUNDS):
            swept = await self._call(self.backend.settle_nodes(dead, self.clock(), SWEEP_LIMIT))
            await self._publish(swept.changes)
            self._forget_nodes += [n for n in dead if n not in swept.remaining]
            dead = sorted(swept.remaining)
            if not dead:
                return

    async def sweep(self) -> None:
        """Settle every user whose deadline passed, any node's (the periodic job)."""
        await self.recover()
        while True:
            changes = await self._call(self.backend.sweep(self.clock(), SWEEP_LIMIT))
            await self._publish(changes)
            if len(changes) < SWEEP_LIMIT:
                return

    # --- status and queries --------------------------------------------------------

    async def set_status(self, user_id: str, status: str) -> PresenceRecord:
        """Set the user's chosen status; it is kept across reconnects and announced.

        :param user_id: whose status.
        :param status: one of ``online``, ``away``, ``dnd``, ``invisible``.
        :returns: the user's record after the change.
        :raises ValueError: for any other status.

        Example, from a handler::

            record = await self.presence.set_status(self.user(sid).user_id, "dnd")
            assert record.status in ("dnd", "offline")
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        record, changes = await self._call(self.backend.set_status(user_id, status, self.clock()))
        await self._publish(changes)
        return record

    async def get(self, user_id: str) -> PresenceRecord:
        """One user's record; an unknown user comes back offline (never an error).

        :param user_id: whose record.

        Example::

            record = await gateway.presence.get("customer-1")
            if record.online:
                print(record.status, record.connections, record.namespaces)
            else:
                print("last seen", record.last_seen)  # None if never seen
        """
        return (await self.get_many([user_id]))[user_id]

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, PresenceRecord]:
        """Records for many users in one round trip, by user id.

        :param user_ids: whose records; every id is a key of the result.

        Example::

            records = await gateway.presence.get_many(["ann", "bob"])
            online = [uid for uid, record in records.items() if record.online]
        """
        return await self._call(self.backend.get_many(list(user_ids), self.clock()))

    async def is_online(self, user_id: str) -> bool:
        """Whether the user has a live connection (or is within the offline grace).

        An ``invisible`` user is online here: this is the truth, for servers.
        Show other users :meth:`PresenceRecord.view_for` instead.

        Example::

            if not await self.presence.is_online(agent_id):
                raise AckError("not_found", "no agent online")
        """
        return (await self.get(user_id)).online

    async def online_count(self) -> int:
        """How many users are online (invisible ones included).

        A user counts once however many connections, devices and nodes they
        have; cheaper than :meth:`stats` when the number is all you need.

        Example, a status route of a plugin::

            count = await gateway_of(request).presence.online_count()
            return envelope({"online_users": count})
        """
        return await self._call(self.backend.online_count())

    async def online_users(
        self, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]:
        """A page of online user ids in id order, and the cursor of the next page.

        :param cursor: ``None`` for the first page, then the cursor returned.
        :param limit: page size.
        :returns: ``(user_ids, next_cursor)``; ``next_cursor`` is ``None`` at the end.

        Example::

            cursor = None
            while True:
                page, cursor = await gateway.presence.online_users(cursor, limit=500)
                ...
                if cursor is None:
                    break
        """
        return await self._call(self.backend.online_users(cursor, limit))

    async def stats(self) -> PresenceStats:
        """Online users, live connections, and connections by namespace.

        :returns: a :class:`~sanic_rt.api.PresenceStats`; ``by_namespace`` maps a
            namespace path (``"/chats"``) to its live connections, on every node
            sharing the backend.

        Example::

            stats = await gateway.presence.stats()
            print(stats.online_users, "users on", stats.connections, "connections")
            chats = stats.by_namespace.get("/chats", 0)
        """
        return await self._call(self.backend.stats(self.clock()))

    async def check(self) -> None:
        """Raise :class:`~sanic_rt.api.BackendUnavailable` unless storage answers (``/ready``)."""
        await self._call(self.backend.check())
