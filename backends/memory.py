"""In-memory presence backend: the dev default, one process only.

Not for production: presence lives in this process and dies with it, and it
cannot be shared by several workers or nodes (start-up refuses that).
Operations run without awaiting, so each is atomic on the event loop; expiry
uses a heap of deadlines with lazy deletion (O(log n) per change).
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Sequence

from sanic_rt.backend import (
    ConnectResult,
    DisconnectResult,
    NodeSweep,
    PresenceBackend,
    PresenceStats,
    TouchResult,
)
from sanic_rt.hookspecs import hookimpl
from sanic_rt.presence_model import (
    Connection,
    PresenceRecord,
    PublicView,
    UserState,
    offline_record,
)


class MemoryBackend(PresenceBackend):
    name = "memory"
    shared = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._users: dict[str, UserState] = {}
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._online: list[str] = []  # sorted, for cursor paging
        self._nodes: dict[str, float] = {}  # node -> alive until

    async def check(self) -> None:
        return None

    # --- the one mutation path --------------------------------------------------

    def _state(self, user_id: str) -> UserState:
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = UserState()
        return state

    def _commit(
        self, user_id: str, state: UserState, before: PublicView, now: float
    ) -> list[PublicView]:
        """Re-index the user after a change and return the visible change, if any."""
        was_online = self._is_indexed(user_id)
        if state.online and not was_online:
            bisect.insort(self._online, user_id)
        elif not state.online and was_online:
            del self._online[bisect.bisect_left(self._online, user_id)]
        deadline = state.deadline(self.timings)
        if deadline is None:
            self._deadlines.pop(user_id, None)
        elif self._deadlines.get(user_id) != deadline:
            self._deadlines[user_id] = deadline
            heapq.heappush(self._heap, (deadline, user_id))
        return state.announce(user_id, before, now)

    def _is_indexed(self, user_id: str) -> bool:
        i = bisect.bisect_left(self._online, user_id)
        return i < len(self._online) and self._online[i] == user_id

    # --- interface --------------------------------------------------------------

    async def connect(self, conn: Connection, now: float, max_connections: int) -> ConnectResult:
        state = self._state(conn.user_id)
        before = state.public_view(conn.user_id)
        if not state.connect(conn, now, self.timings, max_connections):
            return ConnectResult(False, [])
        return ConnectResult(True, self._commit(conn.user_id, state, before, now))

    async def touch(self, conns: Sequence[Connection], now: float, activity: bool) -> TouchResult:
        changes: list[PublicView] = []
        statuses: dict[str, str] = {}
        for conn in conns:
            state = self._state(conn.user_id)
            before = state.public_view(conn.user_id)
            state.touch(conn, now, self.timings, activity)
            changes += self._commit(conn.user_id, state, before, now)
            statuses[conn.user_id] = state.effective_status()
        return TouchResult(changes, statuses)

    async def disconnect(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        state = self._users.get(user_id)
        if state is None:
            return DisconnectResult([], None)
        before = state.public_view(user_id)
        state.disconnect(sid, now, self.timings)
        changes = self._commit(user_id, state, before, now)
        return DisconnectResult(changes, state.grace_until)

    async def disconnect_after_outage(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        state = self._state(user_id)
        before = state.public_view(user_id)
        state.disconnect_after_outage(sid, now, self.timings)
        changes = self._commit(user_id, state, before, now)
        return DisconnectResult(changes, state.grace_until)

    async def node_heartbeat(
        self, node: str, now: float, node_ttl: float, forget: Sequence[str] = ()
    ) -> list[str]:
        for gone in forget:
            if self._nodes.get(gone, now) < now:
                del self._nodes[gone]
        self._nodes[node] = now + node_ttl
        return sorted(n for n, alive_until in self._nodes.items() if alive_until < now)

    async def settle_nodes(self, nodes: Sequence[str], now: float, limit: int) -> NodeSweep:
        # One process holds every node's users here; a scan is fine for development.
        dead = frozenset(nodes)
        changes: list[PublicView] = []
        settled = 0
        for user_id, state in list(self._users.items()):
            # Only the dead nodes' users, as the shared backends' node index holds:
            # settling anyone else here would skip their announcement.
            if not dead & state.nodes():
                continue
            if settled >= limit:
                held = {node for s in self._users.values() for node in s.nodes()}
                return NodeSweep(changes, frozenset(dead & held))
            before = state.public_view(user_id)
            state.drop_nodes(dead, now, self.timings)
            settled += 1
            changes += self._commit(user_id, state, before, now)
        return NodeSweep(changes, frozenset())

    async def settle(self, user_ids: Sequence[str], now: float) -> list[PublicView]:
        changes: list[PublicView] = []
        for user_id in user_ids:
            state = self._users.get(user_id)
            if state is not None:
                before = state.public_view(user_id)
                state.settle(now, self.timings)
                changes += self._commit(user_id, state, before, now)
        return changes

    async def sweep(self, now: float, limit: int) -> list[PublicView]:
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            deadline, user_id = heapq.heappop(self._heap)
            if self._deadlines.get(user_id) == deadline:
                del self._deadlines[user_id]
                due.append(user_id)
        return await self.settle(due, now)

    async def set_status(
        self, user_id: str, status: str, now: float
    ) -> tuple[PresenceRecord, list[PublicView]]:
        state = self._state(user_id)
        before = state.public_view(user_id)
        state.set_status(status, now)
        changes = self._commit(user_id, state, before, now)
        return state.record(user_id, now), changes

    async def get_many(self, user_ids: Sequence[str], now: float) -> dict[str, PresenceRecord]:
        out = {}
        for user_id in user_ids:
            state = self._users.get(user_id)
            out[user_id] = offline_record(user_id) if state is None else state.record(user_id, now)
        return out

    async def online_count(self) -> int:
        return len(self._online)

    async def online_users(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        start = 0 if cursor is None else bisect.bisect_right(self._online, cursor)
        page = self._online[start : start + limit]
        more = start + limit < len(self._online)
        return page, (page[-1] if more and page else None)

    async def stats(self, now: float) -> PresenceStats:
        # Entries as stored, like the shared backends' counters: an expired entry
        # counts until its user is settled (docs/backends.md, "Counts lag a little").
        by_namespace: Counter[str] = Counter()
        for user_id in self._online:
            for _expires_at, namespace, *_device_node in self._users[user_id].conns.values():
                by_namespace[namespace] += 1
        return PresenceStats(len(self._online), sum(by_namespace.values()), dict(by_namespace))


@hookimpl
def register_backends(register) -> None:
    register("memory", MemoryBackend)
