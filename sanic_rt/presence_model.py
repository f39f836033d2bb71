"""Presence records and the per-user state machine.

The state machine is pure: it takes a user's state and a timestamp and
returns the new state plus the change others can see, if any. The memory and
memcached backends apply it under their own atomicity (a lock-free dict
update, a gets/cas loop); the Redis backend runs the same rules in Lua, and
the conformance suite holds all of them to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# Re-exported: backends and plugins import it from here (see sanic_rt.api).
from .config import Timings as Timings

STATUSES = ("online", "away", "dnd", "invisible")


@dataclass(frozen=True)
class Connection:
    """One namespace connection (one Socket.IO sid) of a user."""

    user_id: str
    sid: str
    namespace: str
    device: str = ""
    #: the process (node) holding it; a dead node's connections are settled early
    node: str = ""


@dataclass(frozen=True)
class PublicView:
    """What everyone but the user sees; ``presence:update`` carries exactly this.

    A view returned as a *change* also says which change it was (for presence
    events): the user's ``seq`` after it, when it was decided (``at``) and
    whether the user was visibly online before. They take no part in equality.
    """

    user_id: str
    online: bool
    status: str
    last_seen: float | None
    seq: int = field(default=0, compare=False)
    at: float = field(default=0.0, compare=False)
    was_online: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The ``presence:update`` payload."""
        return {
            "user_id": self.user_id,
            "online": self.online,
            "status": self.status,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class PresenceRecord:
    """The user's presence as it is (the user themself and the HTTP API see this).

    :ivar status: the effective status: ``online``, ``away`` (idle), ``dnd``,
        ``invisible`` or ``offline``.
    :ivar chosen_status: what the user set; kept across reconnects.
    :ivar last_seen: when the user was last online (epoch seconds), or ``None``.
    :ivar connections: live connections, on every node.
    :ivar namespaces: the namespaces those connections are on.
    :ivar sids: ``(sid, namespace)`` of each live connection.
    :ivar public: what other users see (:class:`PublicView`).
    """

    user_id: str
    online: bool
    status: str  # effective status: online | away | dnd | invisible | offline
    chosen_status: str  # what the user set; kept across reconnects
    last_seen: float | None
    connections: int
    namespaces: tuple[str, ...]
    devices: tuple[str, ...]
    sids: tuple[tuple[str, str], ...] = ()  # (sid, namespace) of live connections
    public: PublicView | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as the HTTP API answers it (JSON-ready)."""
        return {
            "user_id": self.user_id,
            "online": self.online,
            "status": self.status,
            "last_seen": self.last_seen,
            "connections": self.connections,
            "namespaces": list(self.namespaces),
            "devices": list(self.devices),
        }

    def view_for(self, viewer_id: str | None) -> dict[str, Any]:
        """The ``presence:query`` entry: the truth for the user, the public view for others."""
        if viewer_id == self.user_id or self.public is None:
            return {"online": self.online, "status": self.status, "last_seen": self.last_seen}
        return {
            "online": self.public.online,
            "status": self.public.status,
            "last_seen": self.public.last_seen,
        }


def next_seq(seq: int, now: float) -> int:
    """The seq of a user's next change: it grows with every change, and starts from
    the clock (ms) so that it still grows after the record was lost (evicted)."""
    return max(seq + 1, int(now * 1000))


def offline_record(user_id: str) -> PresenceRecord:
    view = PublicView(user_id, False, "offline", None)
    return PresenceRecord(user_id, False, "offline", "online", None, 0, (), (), (), view)


@dataclass
class UserState:
    """A user's stored presence. ``conns`` maps sid -> [expires_at, namespace, device, node].

    Records written before node ids existed hold three-item entries (node "").
    """

    conns: dict[str, list[Any]] = field(default_factory=dict)
    status: str = "online"
    online: bool = False
    idle: bool = False
    last_active: float = 0.0
    last_seen: float | None = None
    public_last_seen: float | None = None
    grace_until: float | None = None
    seq: int = 0  # of the last announced change; see next_seq()

    # --- views -------------------------------------------------------------

    def effective_status(self) -> str:
        if not self.online:
            return "offline"
        if self.status == "online" and self.idle:
            return "away"
        return self.status

    def public_view(self, user_id: str) -> PublicView:
        if not self.online or self.status == "invisible":
            return PublicView(user_id, False, "offline", self.public_last_seen)
        return PublicView(user_id, True, self.effective_status(), self.public_last_seen)

    def record(self, user_id: str, now: float) -> PresenceRecord:
        live = {sid: c for sid, c in self.conns.items() if c[0] > now}
        return PresenceRecord(
            user_id=user_id,
            online=self.online,
            status=self.effective_status(),
            chosen_status=self.status,
            last_seen=self.last_seen,
            connections=len(live),
            namespaces=tuple(sorted({c[1] for c in live.values()})),
            devices=tuple(sorted({c[2] for c in live.values() if c[2]})),
            sids=tuple(sorted((sid, c[1]) for sid, c in live.items())),
            public=self.public_view(user_id),
        )

    def deadline(self, t: Timings) -> float | None:
        """The earliest time at which settle() could change something."""
        times = [c[0] for c in self.conns.values()]
        if self.grace_until is not None:
            times.append(self.grace_until)
        if self.online and self.status == "online" and not self.idle:
            times.append(self.last_active + t.idle_timeout)
        return min(times) if times else None

    def nodes(self) -> set[str]:
        """The nodes holding this user's stored connections (entries without a node omitted)."""
        return {c[3] for c in self.conns.values() if len(c) > 3 and c[3]}

    def announce(self, user_id: str, before: PublicView, now: float) -> list[PublicView]:
        """The visible change since ``before`` (none or one), numbered with the next seq.

        Every backend calls this after an operation and stores the state with
        it, so the seq is written in the same atomic step that decides the change.
        """
        after = self.public_view(user_id)
        if after == before:
            return []
        self.seq = next_seq(self.seq, now)
        return [replace(after, seq=self.seq, at=now, was_online=before.online)]

    def is_empty(self) -> bool:
        return not self.online and not self.conns

    # --- operations ----------------------------------------------------------

    def _prune(self, now: float) -> None:
        for sid in [sid for sid, c in self.conns.items() if c[0] <= now]:
            del self.conns[sid]

    def _come_online(self, now: float) -> None:
        self.grace_until = None
        if not self.online:
            self.online = True
            self.idle = False
            self.last_active = now

    def _go_offline(self, now: float) -> None:
        self.online = False
        self.idle = False
        self.grace_until = None
        self.last_seen = now
        if self.status != "invisible":
            self.public_last_seen = now

    def connect(self, conn: Connection, now: float, t: Timings, max_connections: int) -> bool:
        live = [sid for sid, c in self.conns.items() if c[0] > now]
        if conn.sid not in live and len(live) >= max_connections:
            # Refused: nothing changes, expired entries included (the Lua twin
            # writes nothing back either).
            return False
        self._prune(now)
        self.conns[conn.sid] = [now + t.ttl, conn.namespace, conn.device, conn.node]
        self._come_online(now)
        self.last_active = now
        self.idle = False
        return True

    def touch(self, conn: Connection, now: float, t: Timings, activity: bool) -> None:
        """Refresh (and re-create, after a backend restart) one connection entry."""
        self._prune(now)
        self.conns[conn.sid] = [now + t.ttl, conn.namespace, conn.device, conn.node]
        self._come_online(now)
        if activity:
            self.last_active = now
            self.idle = False

    def disconnect(self, sid: str, now: float, t: Timings) -> None:
        self._prune(now)
        self.conns.pop(sid, None)
        if self.online and not self.conns and self.grace_until is None:
            self.grace_until = now + t.offline_grace
        self.settle(now, t)

    def disconnect_after_outage(self, sid: str, now: float, t: Timings) -> None:
        """A disconnect that failed while the storage was down, settled on its return.

        A blank state means the storage lost the record (a restart without
        persistence) and no node has re-registered a live connection since:
        the caller knew the user online and saw them leave, so the user goes
        offline now, and the write makes the announcement happen once even when
        several nodes hold such a disconnect for the same user.
        """
        if self == UserState():
            self._go_offline(now)
        else:
            self.disconnect(sid, now, t)

    def drop_nodes(self, nodes: frozenset[str], now: float, t: Timings) -> bool:
        """Remove the connections held by dead ``nodes``; True if there were any.

        Like an expired entry (the node died, it did not close them), the
        user goes offline at once when nothing else is left.
        """
        dead = [sid for sid, c in self.conns.items() if len(c) > 3 and c[3] in nodes]
        for sid in dead:
            del self.conns[sid]
        self.settle(now, t)
        return bool(dead)

    def settle(self, now: float, t: Timings) -> None:
        self._prune(now)
        if self.online and not self.conns:
            if self.grace_until is None or self.grace_until <= now:
                self._go_offline(now)
                return
        if (
            self.online
            and self.status == "online"
            and not self.idle
            and self.last_active + t.idle_timeout <= now
        ):
            self.idle = True

    def set_status(self, status: str, now: float) -> None:
        if status == "invisible" and self.status != "invisible" and self.online:
            # Going invisible must look exactly like going offline.
            self.public_last_seen = now
        self.status = status
        self.last_active = now
        self.idle = False

    # --- storage form (memcached keeps this as JSON) ---------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.conns,
            "s": self.status,
            "o": self.online,
            "i": self.idle,
            "a": self.last_active,
            "l": self.last_seen,
            "p": self.public_last_seen,
            "g": self.grace_until,
            "q": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserState:
        return cls(
            conns=data["c"],
            status=data["s"],
            online=data["o"],
            idle=data["i"],
            last_active=data["a"],
            last_seen=data["l"],
            public_last_seen=data["p"],
            grace_until=data["g"],
            seq=data.get("q", 0),  # records written before seq existed
        )
