"""The services one app shares: config, Socket.IO server, presence, auth, plugins.

It lives on ``app.ctx.gateway``; namespaces and HTTP handlers reach everything
through it. It is also the one place that emits presence changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import socketio

from . import metrics
from .auth import TokenVerifier
from .config import Config
from .plugin_manager import PluginHost
from .presence import Presence
from .presence_model import Connection, PublicView
from .ratelimit import UserBudgets
from .subscriptions import PresenceSubscriptions

if TYPE_CHECKING:
    from .namespace import BaseNamespace

    N = TypeVar("N", bound=BaseNamespace)

log = logging.getLogger("sanic_rt")
MANAGER_PING_TIMEOUT = 1.0


def user_room(user_id: str) -> str:
    """The room of every connection of ``user_id`` (on each namespace): emit to it to reach them."""
    return f"user:{user_id}"


#: rooms of this prefix resolve from ``Gateway.subscriptions``, not Socket.IO rooms
PRESENCE_ROOM_PREFIX = "presence:"


def presence_room(user_id: str) -> str:
    """The room that receives ``presence:update`` for ``user_id``."""
    return f"{PRESENCE_ROOM_PREFIX}{user_id}"


class PresenceFeed:
    """In-process listeners to the presence changes this node announces."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[list[PublicView]], None]] = []

    def publish(self, changes: list[PublicView]) -> None:
        for listener in self.listeners:
            listener(changes)


@dataclass
class Gateway:
    """The services one app shares; ``app.ctx.gateway``, ``self.gateway`` in a namespace.

    :ivar config: the app's whole :class:`~sanic_rt.api.Config`.
    :ivar sio: the python-socketio ``AsyncServer``.
    :ivar presence: the :class:`~sanic_rt.api.Presence` API.
    :ivar namespaces: the registered namespace paths.
    """

    config: Config
    sio: socketio.AsyncServer
    presence: Presence
    verifier: TokenVerifier
    plugins: PluginHost
    namespaces: list[str] = field(default_factory=list)
    #: in-process listeners to every presence change this node announces (the dashboard)
    feed: PresenceFeed = field(default_factory=PresenceFeed)
    #: this node's presence subscriptions and follows, all namespaces
    subscriptions: PresenceSubscriptions = field(default_factory=PresenceSubscriptions)
    #: per-user event budgets shared by a user's connections on this node
    budgets: UserBudgets = field(init=False)
    #: per-user budgets of presence status changes (each one is announced and sent out)
    status_budgets: UserBudgets = field(init=False)

    def __post_init__(self) -> None:
        server = self.config.server
        self.budgets = UserBudgets(server.user_events_per_second, server.user_events_burst)
        per_minute = self.config.presence.max_status_changes_per_minute
        self.status_budgets = UserBudgets(per_minute / 60.0, per_minute)

    def namespace(self, path: str, kind: type[N] | None = None) -> N:
        """This app's instance of the namespace registered at ``path``.

        The documented way for a plugin to reach its own namespace (its state,
        ``emit``) from an HTTP route or a hook; do not use ``sio.namespace_handlers``.

        :param path: the namespace path, e.g. ``"/polls"``.
        :param kind: the expected class, so the result is typed as it; an
            instance of another class raises ``TypeError``.
        :raises LookupError: no namespace is registered at ``path``.
        """
        handler = self.sio.namespace_handlers.get(path)
        if handler is None or path not in self.namespaces:
            raise LookupError(f"no namespace {path} (have: {', '.join(self.namespaces)})")
        if kind is not None and not isinstance(handler, kind):
            raise TypeError(f"namespace {path} is a {type(handler).__name__}, not {kind.__name__}")
        namespace: N = handler
        return namespace

    async def publish_presence(self, changes: list[PublicView]) -> None:
        """Send each visible change once, to its subscribers in every namespace."""
        metrics.presence_changes(changes)
        self.feed.publish(changes)
        for change in changes:
            payload = change.as_dict()
            room = presence_room(change.user_id)
            for path in self.namespaces:
                await self.sio.emit("presence:update", payload, room=room, namespace=path)

    async def push(
        self, user_ids: Iterable[str], namespace: str, event: str, data: Any
    ) -> tuple[int, int]:
        """Emit ``event`` to each user's connections on ``namespace``, cluster-wide.

        The presence lookup comes first: if storage is unavailable this raises
        before anything is sent, so a caller's retry sends no duplicates.

        :param user_ids: who to send to; duplicates are sent once.
        :param namespace: the namespace path whose connections receive it.
        :param event: the Socket.IO event name.
        :param data: the event's payload.
        :returns: ``(users, connected)``: how many users, and how many of them
            had a live connection on ``namespace``.
        """
        ids = list(dict.fromkeys(user_ids))
        records = await self.presence.get_many(ids)
        connected = sum(1 for r in records.values() if namespace in r.namespaces)
        if ids:
            # One emit to all the rooms: one PUBLISH with a cluster manager.
            await self.sio.emit(event, data, to=[user_room(u) for u in ids], namespace=namespace)
        return len(ids), connected

    async def evict(self, conn: Connection, code: str, message: str) -> None:
        """Close one connection, telling the client why first (``connection:closed``)."""
        try:
            payload = {"code": code, "message": message}
            await self.sio.emit("connection:closed", payload, to=conn.sid, namespace=conn.namespace)
        except Exception:  # the notice is best effort; the disconnect is not
            log.warning("could not send connection:closed to %s", conn.sid)
        await self.sio.disconnect(conn.sid, namespace=conn.namespace)

    async def check_manager(self) -> bool:
        """Whether the cluster manager (if any) answers."""
        return await _ping_manager(self.sio.manager)

    async def disconnect_user(self, user_id: str) -> int:
        """Close every connection of a user on every node; returns how many there were."""
        record = await self.presence.get(user_id)
        for sid, namespace in record.sids:
            # For a sid on another node the manager forwards the disconnect there.
            await self.sio.disconnect(sid, namespace=namespace)
        return len(record.sids)


async def _ping_manager(manager: Any) -> bool:
    redis = getattr(manager, "redis", None)
    if redis is None:
        return True
    try:
        await asyncio.wait_for(redis.ping(), MANAGER_PING_TIMEOUT)
    except Exception:
        return False
    return True
