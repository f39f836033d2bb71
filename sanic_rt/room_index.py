"""A python-socketio manager mixin: room costs proportional to one connection's rooms.

python-socketio's ``BaseManager`` (socketio/base_manager.py, 5.x) finds a
connection's rooms by scanning every room of the namespace: ``basic_disconnect``
copies and scans ``self.rooms[namespace]`` on each disconnect, and
``get_rooms`` (``rooms(sid)``) does the same. With many rooms on a node, each
disconnect or ``rooms(sid)`` stalls the event loop (issue 11, finding 1).
:class:`RoomIndexMixin` keeps a reverse index (namespace, sid) -> rooms
beside ``self.rooms`` and replaces those two scans. It also resolves the
presence rooms (``presence:<user id>``) from sanic-rt's own subscription
index (:mod:`sanic_rt.subscriptions`) instead of Socket.IO rooms.

Apply it to whatever manager class is configured with :func:`indexed_manager`:
``indexed_manager(socketio.AsyncRedisManager)(url, ...)``. A cluster manager of
your own (a subclass of ``socketio.AsyncManager``) gets the same treatment.
tests/test_room_index.py compares it with the upstream manager on random
operation sequences, so an upstream change to the state relied on fails there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeGuard

import socketio

from .gateway import PRESENCE_ROOM_PREFIX
from .subscriptions import PresenceSubscriptions

_classes: dict[type, type] = {}


class RoomIndexMixin:
    """Mix in before a ``socketio.AsyncManager`` subclass (see :func:`indexed_manager`)."""

    rooms: dict[Any, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]
    #: set by the app: where presence rooms are resolved (None: plain rooms)
    presence_subscriptions: PresenceSubscriptions | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}

    # --- python-socketio overrides (BaseManager, 5.x) ------------------------------

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        mine = self._rooms_of.get((namespace, sid))
        if mine is not None:
            mine.discard(room)
            if not mine:
                del self._rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        # Upstream: scan a copy of every room of the namespace for ``sid``; here
        # only the connection's own rooms. The bookkeeping after it is upstream's.
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        _forget(self.pending_connect, namespace, sid)
        _forget(self.pending_disconnect, namespace, sid)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms a client is in (without the internal ``None`` room), as upstream."""
        return [r for r in self._rooms_of.get((namespace, sid), ()) if r is not None]

    def in_room(self, sid: str, namespace: str, room: Any) -> bool:
        """Whether ``sid`` is in ``room`` on this node, in O(1)."""
        return room in self._rooms_of.get((namespace, sid), ())

    def get_participants(self, namespace: str, room: Any) -> Iterator[tuple[str, Any]]:
        index = self.presence_subscriptions
        names = [room] if room is None or isinstance(room, str) else list(room)
        if index is None or not any(_is_presence(r) for r in names):
            yield from super().get_participants(namespace, room)  # type: ignore[misc]
            return
        ns = self.rooms.get(namespace, {})
        connected = ns.get(None, {})
        participants: dict[str, Any] = {}
        for name in names:
            if _is_presence(name):
                user_id = name[len(PRESENCE_ROOM_PREFIX) :]
                for sid in index.subscribers(namespace, user_id):
                    eio_sid = connected.get(sid)
                    if eio_sid is not None:
                        participants[sid] = eio_sid
            elif name in ns:
                participants.update(ns[name])
        yield from participants.items()


def _is_presence(room: Any) -> TypeGuard[str]:
    return isinstance(room, str) and room.startswith(PRESENCE_ROOM_PREFIX)


def _forget(pending: dict[str, list[str]], namespace: str, sid: str) -> None:
    sids = pending.get(namespace)
    if sids is not None and sid in sids:
        sids.remove(sid)
        if not sids:
            del pending[namespace]


def indexed_manager(base: type[socketio.AsyncManager]) -> type[socketio.AsyncManager]:
    """``base`` with :class:`RoomIndexMixin` applied (one class per base, cached)."""
    if issubclass(base, RoomIndexMixin):
        return base
    if base not in _classes:
        _classes[base] = type(f"Indexed{base.__name__}", (RoomIndexMixin, base), {})
    return _classes[base]
