"""This node's presence subscriptions: who gets ``presence:update`` for whom.

Kept here, not as python-socketio rooms: the base manager scans every room of
a namespace on each disconnect, so one room per subscribed id made every
disconnect cost grow with everyone's subscriptions (issue 11, finding 1).
Every operation here costs in proportion to the ids of the one connection
involved. The manager mixin in :mod:`sanic_rt.room_index` resolves the room
``presence:<user id>`` from this index when ``Gateway.publish_presence``
emits to it, so the cluster path (one emit to that room) is unchanged.

A connection's ids are of two kinds: explicit subscriptions
(``presence:subscribe``, counted against the per-user cap) and follows
(decided at connect by the ``follows`` hook, capped by the plugin). An id
both followed and subscribed is delivered once.
"""

from __future__ import annotations

from collections.abc import Iterable

_NONE: frozenset[str] = frozenset()


class PresenceSubscriptions:
    """user id -> subscriber sids per namespace, and (namespace, sid) -> ids."""

    def __init__(self) -> None:
        # namespace -> watched user id -> sids (a dict keeps insertion order)
        self._subscribers: dict[str, dict[str, dict[str, None]]] = {}
        self._explicit: dict[tuple[str, str], set[str]] = {}
        self._follows: dict[tuple[str, str], frozenset[str]] = {}
        self._owner: dict[tuple[str, str], str] = {}  # (namespace, sid) -> subscriber user id
        self._per_user: dict[str, int] = {}  # subscriber user id -> explicit subscriptions

    # --- reads -------------------------------------------------------------------

    def subscribers(self, namespace: str, user_id: str) -> Iterable[str]:
        """The sids on ``namespace`` that get presence updates of ``user_id``."""
        return self._subscribers.get(namespace, {}).get(user_id, {}).keys()

    def explicit(self, namespace: str, sid: str) -> frozenset[str]:
        """The ids this connection subscribed to with ``presence:subscribe``."""
        return frozenset(self._explicit.get((namespace, sid), _NONE))

    def watched(self, namespace: str, sid: str) -> frozenset[str]:
        """Every id this connection gets presence updates of: subscriptions and follows."""
        key = (namespace, sid)
        return self._follows.get(key, _NONE) | self._explicit.get(key, _NONE)

    def count_for_user(self, user_id: str) -> int:
        """Explicit subscriptions of ``user_id`` across its connections on this node."""
        return self._per_user.get(user_id, 0)

    def count_for_connection(self, namespace: str, sid: str) -> int:
        return len(self._explicit.get((namespace, sid), _NONE))

    # --- writes ------------------------------------------------------------------

    def follow(self, namespace: str, sid: str, owner: str, user_ids: Iterable[str]) -> None:
        """Set the ids a connection follows automatically (once, at connect)."""
        key = (namespace, sid)
        followed = frozenset(user_ids)
        if not followed:
            return
        self._owner[key] = owner
        self._follows[key] = followed
        for user_id in followed:
            self._watch(namespace, user_id, sid)

    def subscribe(self, namespace: str, sid: str, owner: str, user_ids: Iterable[str]) -> int:
        """Add explicit subscriptions; returns how many were new."""
        user_ids = list(user_ids)
        if not user_ids:
            return 0
        key = (namespace, sid)
        mine = self._explicit.setdefault(key, set())
        self._owner[key] = owner
        added = 0
        for user_id in user_ids:
            if user_id not in mine:
                mine.add(user_id)
                self._watch(namespace, user_id, sid)
                added += 1
        self._per_user[owner] = self._per_user.get(owner, 0) + added
        return added

    def unsubscribe(self, namespace: str, sid: str, user_ids: Iterable[str]) -> None:
        """Drop explicit subscriptions; a followed id keeps its updates."""
        key = (namespace, sid)
        mine = self._explicit.get(key)
        if not mine:
            return
        followed = self._follows.get(key, _NONE)
        removed = 0
        for user_id in user_ids:
            if user_id in mine:
                mine.discard(user_id)
                removed += 1
                if user_id not in followed:
                    self._unwatch(namespace, user_id, sid)
        self._uncount(self._owner[key], removed)
        if not mine:
            del self._explicit[key]

    def drop(self, namespace: str, sid: str) -> None:
        """Forget a connection entirely (it closed)."""
        key = (namespace, sid)
        owner = self._owner.pop(key, None)
        if owner is None:
            return
        mine = self._explicit.pop(key, set())
        for user_id in mine | self._follows.pop(key, _NONE):
            self._unwatch(namespace, user_id, sid)
        self._uncount(owner, len(mine))

    # --- internals -----------------------------------------------------------------

    def _watch(self, namespace: str, user_id: str, sid: str) -> None:
        self._subscribers.setdefault(namespace, {}).setdefault(user_id, {})[sid] = None

    def _unwatch(self, namespace: str, user_id: str, sid: str) -> None:
        watchers = self._subscribers.get(namespace, {})
        sids = watchers.get(user_id)
        if sids is None:
            return
        sids.pop(sid, None)
        if not sids:
            del watchers[user_id]

    def _uncount(self, owner: str, removed: int) -> None:
        left = self._per_user.get(owner, 0) - removed
        if left > 0:
            self._per_user[owner] = left
        else:
            self._per_user.pop(owner, None)
