"""The base namespace every plugin namespace inherits.

Event dispatch rule: an event name maps to the method ``on_`` + the name with
every ``:``, ``-`` and ``.`` replaced by ``_`` (``chat:message`` ->
``on_chat_message``). A handler receives ``(sid, data)`` and returns the ack's
``data``; raising :class:`AckError` answers with an error envelope. Every ack
uses the one envelope; unknown events get ``not_found``; events over the rate
limit get ``rate_limited``; an exception in a handler is logged and answered
``internal``. The connection always stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import socketio

from .auth import AuthenticatedUser, AuthError, device_from_handshake, token_from_handshake
from .backend import BackendUnavailable
from .envelope import AckError, Reply, error, ok
from .gateway import presence_room, user_room
from .presence import TooManyConnections
from .presence_model import STATUSES
from .ratelimit import TokenBucket, event_cost
from .recovery import Recovery, Session, restorable_rooms
from .tasks import BackgroundTasks
from .validation import Choice, Id, IdList, validate

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("sanic_rt.namespace")

#: events that read presence and so do not count as user activity
PASSIVE_EVENTS = frozenset({"presence:query", "presence:subscribe", "presence:unsubscribe"})
_TRANSLATE = str.maketrans({":": "_", "-": "_", ".": "_"})
MAX_QUERY_IDS = 500


def handler_name(event: str) -> str:
    return "on_" + event.translate(_TRANSLATE)


#: the ``authorize`` action asked before presence is read (query and subscribe)
PRESENCE_READ = "presence.read"


@dataclass(slots=True)
class ConnState:
    """Per-connection state, in the namespace's ``_conns`` by sid.

    Slotted: one of these lives for every idle connection (docs/performance.md,
    RSS per connection). Presence subscriptions and follows live in
    ``gateway.subscriptions``.
    """

    user: AuthenticatedUser
    bucket: TokenBucket
    #: the user's budget, shared by its connections on this node
    user_bucket: TokenBucket
    #: when the token's expiry closes this connection (wall clock; None: never)
    expires_at: float | None = None


class BaseNamespace(socketio.AsyncNamespace):
    """The base of every namespace: dispatch, acks, auth, rate limit and presence events.

    Subclass it and add ``async def on_<event>(self, sid, data)`` handlers (the
    dispatch rule is in the module docstring). It is instantiated once per app
    as ``namespace_class(path, gateway, settings)``: build your schemas and
    per-namespace state in ``__init__``.

    :ivar gateway: the app's :class:`~sanic_rt.api.Gateway`.
    :ivar settings: this plugin's settings (what its ``configure`` returned).
    :ivar presence: the :class:`~sanic_rt.api.Presence` API.

    python-socketio's ``emit``, ``enter_room``, ``leave_room`` and ``rooms``
    are inherited; ``emit`` defaults to the namespace's own path.
    """

    def __init__(self, namespace: str, gateway: Gateway, settings: Any = None) -> None:
        super().__init__(namespace)
        self.gateway = gateway
        self.settings = settings
        self.presence = gateway.presence
        self._conns: dict[str, ConnState] = {}
        # Token expiry: one timer per namespace over a heap of (deadline, sid),
        # not a TimerHandle and closure per connection (~700 B each). Entries are
        # dropped lazily: one counts only while it equals its connection's expires_at.
        self._expiry_heap: list[tuple[float, str]] = []
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_when = 0.0
        self._expiry_loop: asyncio.AbstractEventLoop | None = None
        self._background = BackgroundTasks()

    # --- the one way to get the current user ------------------------------------

    def user(self, sid: str) -> AuthenticatedUser:
        """The connection's authenticated user (the one way to get it)."""
        return self._conns[sid].user

    # --- dispatch ------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect":
            sid, environ = args[0], args[1]
            return await self._connect(sid, environ, args[2] if len(args) > 2 else None)
        if event == "disconnect":
            return await self._disconnect(args[0], args[1] if len(args) > 1 else None)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        state = self._conns.get(sid)
        if state is None:
            return error("forbidden", "not connected")
        if not _charge(state, event_cost(event, data)):
            return error("rate_limited", "too many events; slow down")
        handler = getattr(self, handler_name(event), None)
        if handler is None:
            return error("not_found", f"unknown event {event!r}")
        try:
            if event not in PASSIVE_EVENTS and event != "ping":
                await self.presence.activity(state.user.user_id, sid)
            result = await handler(sid, data)
            if isinstance(result, Reply):
                return ok(result.data, **result.fields)
            return ok(result)
        except AckError as err:
            return err.envelope()
        except BackendUnavailable:
            return error("unavailable", "temporarily unavailable; try again")
        except Exception:
            log.exception("handler for %r in %s failed", event, self.namespace)
            return error("internal", "internal error")

    # --- connect / disconnect ------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        try:
            return await self._admit(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception:
            # A failing hook or storage bug must refuse cleanly, not leave the
            # client waiting or a half-registered connection behind.
            log.exception("connect to %s failed", self.namespace)
            state = self._conns.pop(sid, None)
            self.gateway.subscriptions.drop(self.namespace, sid)
            if state is not None:
                self.gateway.budgets.release(state.user.user_id)
                with contextlib.suppress(Exception):
                    await self.presence.disconnect(state.user.user_id, sid)
            self.presence.forget_local(sid)
            if self.server.recovery is not None:
                self.server.recovery.forget(sid)
            return self._refuse("internal", "internal error; try again")

    async def _admit(self, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        gw = self.gateway
        try:
            token = token_from_handshake(environ, auth, gw.config.auth.allow_query_token)
            user_id, claims = await gw.verifier.verify(token)
        except AuthError as err:
            return self._refuse(err.code, err.message)
        user = AuthenticatedUser(
            user_id=user_id,
            claims=claims,
            exp=gw.verifier.expiry(claims),
            connected_at=time.time(),
            device=device_from_handshake(auth),
        )
        if not gw.budgets.take(user_id):
            # Charged to the user's budget: reconnecting must not buy a fresh one.
            return self._refuse("rate_limited", "too many connects; slow down", user_id)
        if not await gw.plugins.authorize(user, self.namespace, "connect", None):
            return self._refuse("forbidden", "connection not allowed", user_id)
        follows = await gw.plugins.follows(user=user, namespace=self.namespace, claims=claims)
        try:
            await self.presence.connect(user_id, sid, self.namespace, {"device": user.device})
        except TooManyConnections:
            limit = gw.config.auth.max_connections_per_user
            return self._refuse("too_many_connections", f"at most {limit} connections", user_id)
        server = gw.config.server
        bucket = TokenBucket(server.events_per_second, server.events_burst)
        state = ConnState(user, bucket, gw.budgets.acquire(user_id))
        self._conns[sid] = state
        session = await self._claim_session(sid, user_id, auth)
        await self.enter_room(sid, user_room(user_id))
        # Follows are presence reads too: the same ``presence.read`` check as a subscribe.
        if followed_ids := sorted(follows - {user_id}):
            followed, _forbidden = await self._readable(sid, followed_ids)
            gw.subscriptions.follow(self.namespace, sid, user_id, followed)
        if session is not None:
            await self._restore_session(sid, state, session)
        self._schedule_expiry(sid, state)
        await gw.plugins.notify("user_connected", user=user, namespace=self.namespace, sid=sid)
        return True

    def _refuse(self, code: str, message: str, user_id: str | None = None) -> bool:
        who = f" user {user_id}" if user_id else ""
        fields = {"namespace": self.namespace, "user_id": user_id, "code": code}
        log.info(
            "refused connection to %s%s: %s (%s)", self.namespace, who, code, message, extra=fields
        )
        raise socketio.exceptions.ConnectionRefusedError(
            message, {"code": code, "message": message}
        )

    async def _disconnect(self, sid: str, reason: str | None = None) -> None:
        state = self._conns.pop(sid, None)
        if state is None:
            return
        state.expires_at = None
        await self._keep_session(sid, state, reason)
        self.gateway.subscriptions.drop(self.namespace, sid)
        self.gateway.budgets.release(state.user.user_id)
        try:
            await self.presence.disconnect(state.user.user_id, sid)
        except BackendUnavailable:
            pass  # kept by presence and settled when the storage is back
        await self.gateway.plugins.notify(
            "user_disconnected", user=state.user, namespace=self.namespace, sid=sid
        )

    # --- connection state recovery (sanic_rt/recovery.py) ------------------------

    async def _claim_session(self, sid: str, user_id: str, auth: Any) -> Session | None:
        """Opt a connection that asks for it in; its earlier session if it can have it back.

        Runs after the token was verified: recovery never skips auth.
        """
        recovery: Recovery | None = self.server.recovery
        if recovery is None or not isinstance(auth, dict) or auth.get("recover") is not True:
            return None
        session = await recovery.claim(sid, user_id, self.namespace, auth)
        if session is None:
            recovery.opt_in(sid)
        return session

    async def restore_rooms(self, sid: str, rooms: list[str]) -> list[str]:
        """The rooms of a recovered session this connection may enter again.

        Called on a recovered connection (after its new token was verified) with
        the rooms it was in when it dropped, its own user room and presence rooms
        left out. Override it to ask ``authorize`` again for rooms your namespace
        guards (the token may have lost a claim since); the default keeps all.
        Missed events are replayed only for the rooms returned.
        """
        return rooms

    async def _restore_session(self, sid: str, state: ConnState, session: Session) -> None:
        # Presence rooms come back through the subscriptions and the new token's follows.
        own = user_room(state.user.user_id)
        saved = [r for r in session.rooms if r != own and not r.startswith(presence_room(""))]
        rooms = await self.restore_rooms(sid, saved)
        for room in rooms:
            await self.enter_room(sid, room)
        await self._resubscribe(sid, state, session.subscriptions)
        # Missed events are matched to what was restored now, not to the saved list.
        watched = sorted(self.gateway.subscriptions.watched(self.namespace, sid))
        session.rooms = [own, *rooms, *(presence_room(u) for u in watched)]
        await self.server.recovery.catch_up(sid, session)

    async def _resubscribe(self, sid: str, state: ConnState, user_ids: list[str]) -> None:
        """A recovered session's subscriptions, within today's caps and policy."""
        index, user_id = self.gateway.subscriptions, state.user.user_id
        presence = self.gateway.config.presence
        room = presence.max_subscriptions_per_user - index.count_for_user(user_id)
        wanted = user_ids[: max(0, min(presence.max_subscriptions, room))]
        allowed, _forbidden = await self._readable(sid, wanted)
        index.subscribe(self.namespace, sid, user_id, allowed)

    async def _keep_session(self, sid: str, state: ConnState, reason: str | None) -> None:
        recovery = self.server.recovery
        if recovery is None or recovery.pid_of(sid) is None:
            return
        index = self.gateway.subscriptions
        # Presence rooms live in the subscription index, not in rooms(sid); the
        # session lists them so that missed presence updates are matched to it.
        watched = sorted(index.watched(self.namespace, sid))
        rooms = restorable_rooms(self.rooms(sid), sid) + [presence_room(u) for u in watched]
        subscriptions = sorted(index.explicit(self.namespace, sid))
        session = Session(state.user.user_id, self.namespace, sid, rooms, subscriptions)
        await recovery.persist(sid, session, reason)

    # --- token expiry ----------------------------------------------------------

    def _schedule_expiry(self, sid: str, state: ConnState) -> None:
        auth = self.gateway.config.auth
        if not auth.disconnect_on_expiry or state.user.exp is None:
            state.expires_at = None  # an earlier entry in the heap no longer counts
            return
        state.expires_at = deadline = state.user.exp + auth.leeway
        heapq.heappush(self._expiry_heap, (deadline, sid))
        if len(self._expiry_heap) > 2 * len(self._conns) + 64:
            # Disconnects leave their entries behind; rebuild before they pile up.
            self._expiry_heap = [
                (s.expires_at, k) for k, s in self._conns.items() if s.expires_at is not None
            ]
            heapq.heapify(self._expiry_heap)
        self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Have the one timer fire at the earliest deadline in the heap."""
        heap, loop = self._expiry_heap, asyncio.get_running_loop()
        if self._expiry_timer is not None:
            if heap and self._expiry_when <= heap[0][0] and self._expiry_loop is loop:
                return  # it fires early enough, and re-arms for the rest
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if heap:
            self._expiry_when, self._expiry_loop = heap[0][0], loop
            delay = max(0.0, heap[0][0] - time.time())
            self._expiry_timer = loop.call_later(delay, self._expire_due)

    def _expire_due(self) -> None:
        self._expiry_timer = None
        heap, now = self._expiry_heap, time.time()
        while heap and heap[0][0] <= now:
            deadline, sid = heapq.heappop(heap)
            state = self._conns.get(sid)
            if state is not None and state.expires_at == deadline:
                state.expires_at = None
                self._background.spawn(self._expire(sid))
        self._arm_expiry()

    async def _expire(self, sid: str) -> None:
        state = self._conns.get(sid)
        if state is None:
            return
        try:
            await self.emit("auth:expired", {"exp": state.user.exp}, to=sid)
        except Exception:  # the notice is best effort; the disconnect is not
            log.warning("could not send auth:expired to %s", sid)
        await self.disconnect(sid)

    # --- events every namespace has -------------------------------------------

    async def on_ping(self, sid: str, data: Any) -> dict[str, Any]:
        status = await self.presence.mark_user_online(self.user(sid).user_id, sid)
        return {"status": status}

    async def on_auth_refresh(self, sid: str, data: Any) -> dict[str, Any]:
        payload = validate(data, {"token": Id(max_length=1 << 20)})
        try:
            user_id, claims = await self.gateway.verifier.verify(payload["token"])
        except AuthError as err:
            code = "token_expired" if err.code == "token_expired" else "invalid_token"
            raise AckError(code, err.message) from None
        state = self._conns[sid]
        if user_id != state.user.user_id:
            raise AckError("forbidden", "token is for another user")
        exp = self.gateway.verifier.expiry(claims)
        state.user = AuthenticatedUser(
            user_id, claims, exp, state.user.connected_at, state.user.device
        )
        self._schedule_expiry(sid, state)
        return {"exp": exp}

    async def on_presence_query(self, sid: str, data: Any) -> Reply:
        payload = validate(data, {"user_ids": IdList(max_items=MAX_QUERY_IDS)})
        allowed, forbidden = await self._readable(sid, payload["user_ids"])
        return _with_forbidden(await self._snapshot(sid, allowed), forbidden)

    async def on_presence_subscribe(self, sid: str, data: Any) -> Reply:
        presence = self.gateway.config.presence
        limit = presence.max_subscriptions
        payload = validate(data, {"user_ids": IdList(max_items=limit)})
        allowed, forbidden = await self._readable(sid, payload["user_ids"])
        index, user_id = self.gateway.subscriptions, self.user(sid).user_id
        current = index.explicit(self.namespace, sid)
        new = [u for u in allowed if u not in current]
        if len(current) + len(new) > limit:
            raise AckError("bad_request", f"at most {limit} subscriptions", field="user_ids")
        per_user = presence.max_subscriptions_per_user
        if index.count_for_user(user_id) + len(new) > per_user:
            raise AckError(
                "bad_request",
                f"at most {per_user} subscriptions per user on this server",
                field="user_ids",
            )
        index.subscribe(self.namespace, sid, user_id, new)
        return _with_forbidden(await self._snapshot(sid, allowed), forbidden)

    async def on_presence_unsubscribe(self, sid: str, data: Any) -> dict[str, Any]:
        limit = self.gateway.config.presence.max_subscriptions
        payload = validate(data, {"user_ids": IdList(max_items=limit)})
        index = self.gateway.subscriptions
        index.unsubscribe(self.namespace, sid, payload["user_ids"])
        return {"user_ids": sorted(index.explicit(self.namespace, sid))}

    async def on_presence_set_status(self, sid: str, data: Any) -> dict[str, Any]:
        payload = validate(data, {"status": Choice(choices=STATUSES)})
        if not self.gateway.status_budgets.take(self.user(sid).user_id):
            per_minute = self.gateway.config.presence.max_status_changes_per_minute
            raise AckError("rate_limited", f"at most {per_minute} status changes a minute")
        record = await self.presence.set_status(self.user(sid).user_id, payload["status"])
        return {"status": record.status}

    async def _snapshot(self, sid: str, user_ids: list[str]) -> dict[str, Any]:
        viewer = self.user(sid).user_id
        records = await self.presence.get_many(user_ids) if user_ids else {}
        return {uid: records[uid].view_for(viewer) for uid in user_ids}

    async def _readable(self, sid: str, user_ids: list[str]) -> tuple[list[str], list[str]]:
        """(allowed, forbidden) ids by the plugins' ``authorize`` for ``presence.read``."""
        allowed = await self.gateway.plugins.allowed_ids(
            self.user(sid), self.namespace, PRESENCE_READ, user_ids
        )
        if len(allowed) == len(user_ids):
            return user_ids, []
        return (
            [u for u in user_ids if u in allowed],
            [u for u in user_ids if u not in allowed],
        )

    # --- helpers for plugin namespaces ------------------------------------------

    def in_room(self, sid: str, room: str) -> bool:
        """Whether this connection is in ``room`` on this namespace (O(1), no scan)."""
        return bool(self.server.manager.in_room(sid, self.namespace, room))

    async def authorize(self, sid: str, action: str, resource: Any) -> None:
        """Raise ``forbidden`` unless every plugin allows ``action`` on ``resource``."""
        if not await self.gateway.plugins.authorize(
            self.user(sid), self.namespace, action, resource
        ):
            raise AckError("forbidden", f"{action} not allowed")


def _charge(state: ConnState, cost: int) -> bool:
    """Take ``cost`` from the connection's and the user's buckets, or from neither."""
    if not state.bucket.take(cost):
        return False
    if not state.user_bucket.take(cost):
        state.bucket.give_back(cost)
        return False
    return True


def _with_forbidden(data: dict[str, Any], forbidden: Iterable[str]) -> Reply:
    # Beside ``data``, not in it: ``data`` is keyed by user id, and any string is one.
    forbidden = list(forbidden)
    return Reply(data, {"forbidden": forbidden} if forbidden else {})
