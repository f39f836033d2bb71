"""The presence backend interface.

Every method is one round trip on a networked backend, and every method that
can change what others see returns those changes: the backend decides each
online/offline transition atomically, so exactly one caller in the whole
cluster is told about it and announces it. Time is always passed in as
``now`` so that tests drive it with an injected clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import Config
from .presence_model import Connection, PresenceRecord, PublicView, Timings


class BackendUnavailable(Exception):
    """The storage could not be reached in time; callers answer ``unavailable``."""


@dataclass(frozen=True)
class ConnectResult:
    accepted: bool
    changes: list[PublicView] = field(default_factory=list)


@dataclass(frozen=True)
class TouchResult:
    changes: list[PublicView]
    statuses: dict[str, str]  # user_id -> effective status after the touch
    #: users whose update could not be applied (their storage is down); their
    #: callers answer ``unavailable`` while the rest of the batch succeeded
    unavailable: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DisconnectResult:
    changes: list[PublicView]
    grace_until: float | None  # when to settle the user, if offline is pending


@dataclass(frozen=True)
class NodeSweep:
    changes: list[PublicView]
    #: the dead nodes that still hold connections (the limit was reached); a
    #: node absent here holds none and is forgotten
    remaining: frozenset[str]


@dataclass(frozen=True)
class PresenceStats:
    online_users: int
    connections: int
    by_namespace: dict[str, int]


class PresenceBackend(ABC):
    """Storage for the one presence record per user."""

    name: str = ""

    def __init__(self, config: Config, timings: Timings) -> None:
        self.config = config
        self.timings = timings

    #: whether several processes may share this backend
    shared: bool = True

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once per process before serving."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at shutdown."""

    def event_stream_keys(self) -> list[str] | None:
        """The streams this backend appends every change's event to, in the same
        atomic step that decides it (``[events.stream]``); ``None`` if it keeps none."""
        return None

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`BackendUnavailable` unless the storage answers."""

    @abstractmethod
    async def connect(self, conn: Connection, now: float, max_connections: int) -> ConnectResult:
        """Register a connection unless the user already has ``max_connections`` live ones."""

    async def connect_many(
        self, conns: Sequence[Connection], now: float, max_connections: int
    ) -> list[ConnectResult]:
        """:meth:`connect` for several connections, in order; one round trip where possible.

        Each connection is admitted as if connected alone, in list order (two of
        one user's count against each other). A backend that overrides this gets
        concurrent connects in batches (:class:`~sanic_rt.presence.Presence`
        coalesces them); the default, one :meth:`connect` after the other, is
        only there for direct callers.
        """
        return [await self.connect(c, now, max_connections) for c in conns]

    @property
    def batches_connects(self) -> bool:
        """Whether this backend overrides :meth:`connect_many`."""
        return type(self).connect_many is not PresenceBackend.connect_many

    @abstractmethod
    async def touch(self, conns: Sequence[Connection], now: float, activity: bool) -> TouchResult:
        """Refresh (re-creating if lost) these connections; ``activity`` also resets idle."""

    @abstractmethod
    async def disconnect(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        """Remove a connection; the last one starts the offline grace."""

    @abstractmethod
    async def settle(self, user_ids: Sequence[str], now: float) -> list[PublicView]:
        """Apply due expiry, grace and idle transitions for these users."""

    @abstractmethod
    async def sweep(self, now: float, limit: int) -> list[PublicView]:
        """Settle up to ``limit`` users whose deadline has passed, whoever's node they were on."""

    async def disconnect_after_outage(self, user_id: str, sid: str, now: float) -> DisconnectResult:
        """Settle a disconnect that failed while the storage was down (see UserState).

        The caller saw this connection live and close. When the storage has no
        record of the user (it lost its data), record them offline and return
        that change, once across every caller. This default cannot make that
        atomic: a backend without an override announces offline from each
        caller that holds such a disconnect.
        """
        result = await self.disconnect(user_id, sid, now)
        record = (await self.get_many([user_id], now))[user_id]
        if result.changes or record.online or record.last_seen is not None:
            return result
        return DisconnectResult([PublicView(user_id, False, "offline", None)], None)

    async def node_heartbeat(
        self, node: str, now: float, node_ttl: float, forget: Sequence[str] = ()
    ) -> list[str]:
        """Mark ``node`` alive until ``now + node_ttl``; return the nodes found dead.

        ``forget`` drops dead nodes that hold no connections any more from the
        registry (a node that was only slow re-registers at its next beat).
        One round trip. The default keeps no node liveness: dead nodes are
        never reported and a crashed node's connections expire after ``ttl``.
        """
        return []

    async def settle_nodes(self, nodes: Sequence[str], now: float, limit: int) -> NodeSweep:
        """Remove up to ``limit`` users' connections held by the dead ``nodes``, and settle them."""
        return NodeSweep([], frozenset())

    @abstractmethod
    async def set_status(
        self, user_id: str, status: str, now: float
    ) -> tuple[PresenceRecord, list[PublicView]]:
        """Set the user's chosen status (kept across reconnects)."""

    @abstractmethod
    async def get_many(self, user_ids: Sequence[str], now: float) -> dict[str, PresenceRecord]:
        """Records for these users; unknown users come back offline."""

    @abstractmethod
    async def online_count(self) -> int:
        """Users online (invisible ones included)."""

    @abstractmethod
    async def online_users(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """A page of online user ids in id order, and the cursor of the next page."""

    @abstractmethod
    async def stats(self, now: float) -> PresenceStats:
        """Online users, live connections, and connections by namespace."""


#: ``factory(config, timings)`` builds a backend; ``register_backends`` registers one.
BackendFactory = Callable[[Config, Timings], PresenceBackend]
