"""Socket.IO connection state recovery (protocol v5, socket.io 4.6+) for python-socketio.

A connection opts in with ``recover: true`` in its CONNECT ``auth``. Its CONNECT
answer then carries a private session id ``pid``, and every event broadcast to it
carries, as its last argument, the offset of that event in the event log (the
official client stores the last one it saw). When such a connection drops
(transport close or error, ping timeout), its session — user, namespace, rooms,
presence subscriptions — is kept for ``[recovery] max_disconnection`` seconds.
A reconnect presenting ``{pid, offset}`` with a token for the same user gets the
session back and, before anything new, the events it missed since ``offset``.

The event log is the cluster bus stream with ``[cluster] manager =
"redis-streams"`` (sanic_rt/stream_manager.py) and :class:`MemoryEventLog` in a
single process. Both give events an offset of the form ``<ms>-<seq>`` (a Redis
stream id) that grows with every event.

python-socketio has no notion of any of this; what we replace of it is named
where it happens: the per-recipient packets of ``AsyncManager.emit`` in
:meth:`Recovery.deliver`, the CONNECT answer in ``GatewayServer._send_packet``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import socketio
from engineio import packet as eio_packet
from socketio import packet

#: disconnect reasons after which a session is kept: the network went away, the
#: client did not leave on purpose (python-engineio's ``reason`` values)
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})
_OFFSET = re.compile(r"^(\d{1,16})-(\d{1,16})$")
Offset = tuple[int, int]
ZERO_OFFSET = "0-0"


def parse_offset(text: Any) -> Offset | None:
    """``"<ms>-<seq>"`` as a comparable tuple; None for anything else (bad input)."""
    if not isinstance(text, str):
        return None
    match = _OFFSET.match(text)
    return (int(match[1]), int(match[2])) if match else None


@dataclass
class Session:
    """What a dropped connection leaves behind for its reconnect."""

    user_id: str
    namespace: str
    sid: str
    rooms: list[str]
    subscriptions: list[str]
    #: the log's offset when the connection (or its last restore) began; used when
    #: the client saw no event and so has no offset of its own to present
    offset: str = ZERO_OFFSET
    #: every event up to here had been handed to the connection when it dropped
    delivered: str = ZERO_OFFSET

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str | bytes) -> Session | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


class RecoveryStore(Protocol):
    """Where sessions and missed events come from (the manager implements it)."""

    def delivered_upto(self) -> str:
        """Every event up to this offset has been delivered on this node.

        A node delivers its own emits at once and other nodes' as its reader gets
        them, so a client's last offset (from an own emit) can be ahead of an
        event still on its way: recovery starts at the lower of the two.
        """

    async def save_session(self, pid: str, session: Session, ttl: float) -> None: ...

    async def take_session(self, pid: str, user_id: str, namespace: str) -> Session | None:
        """The session under ``pid``, removed, if it is ``user_id``'s on ``namespace``.

        Someone else's pid is left alone (and None returned): presenting it must
        neither leak nor spend the owner's session.
        """

    async def read_after(
        self, offset: str, claimed: str | None = None
    ) -> list[tuple[str, dict[str, Any]]] | None:
        """Emit messages logged after ``offset``, oldest first.

        None if some are gone, or if ``claimed`` (the offset a client presented)
        is past the newest event: no client can have seen it.
        """


def message_args(message: dict[str, Any]) -> list[Any]:
    """An emit message's event arguments (as python-socketio's pub/sub manager decodes them)."""
    data = message["data"]
    if message.get("binary"):
        attachments = [base64.b64decode(a) for a in data[1:]]
        data = socketio.packet.Packet.reconstruct_binary(data[0], attachments)
    return list(data) if isinstance(data, list | tuple) else [data]


def _resume_from(client_offset: Any, session: Session) -> str | None:
    """Where the replay starts: the client's offset, unless delivery lagged behind it.

    None for an offset that is not one (bad input: a fresh connection).
    """
    if client_offset is None:
        return session.offset
    client, delivered = parse_offset(client_offset), parse_offset(session.delivered)
    if client is None:
        return None
    return session.delivered if delivered is not None and delivered < client else client_offset


def _at_most(offset: str, newest: Offset) -> bool:
    key = parse_offset(offset)
    return key is not None and key <= newest


def _addressed_to(message: dict[str, Any], session: Session) -> bool:
    if message.get("method") != "emit" or message.get("callback"):
        return False
    if (message.get("namespace") or "/") != session.namespace:
        return False
    skip = message.get("skip_sid")
    if skip == session.sid or (isinstance(skip, list) and session.sid in skip):
        return False
    room = message.get("room")
    if room is None:
        return True
    targets = [room] if isinstance(room, str) else room
    return any(r in session.rooms for r in targets)


@dataclass
class _Restore:
    """A restored connection between its connect handler and its CONNECT answer."""

    missed: list[tuple[str, dict[str, Any]]]
    #: the offset the log was read up to
    read_upto: str = ZERO_OFFSET
    #: live events that arrived meanwhile; sent after the missed ones
    held: list[tuple[str, str, list[Any]]] = field(default_factory=list)


class Recovery:
    """Per-connection recovery state of one node, and the offset-carrying delivery."""

    def __init__(self, store: RecoveryStore, max_disconnection: float) -> None:
        self.store = store
        self.max_disconnection = max_disconnection
        self.server: Any = None  # the GatewayServer, set by it
        #: opted-in connections: sid -> (pid, offset of the log when it began)
        self.sessions: dict[str, tuple[str, str]] = {}
        self._restoring: dict[str, _Restore] = {}
        #: a restored connection never gets an event at or before its last replayed one
        self._replayed_upto: dict[str, Offset] = {}

    # --- connect / disconnect ------------------------------------------------------

    def opt_in(self, sid: str, pid: str | None = None) -> str:
        """Give a connection a pid (sent in its CONNECT answer); a restored one keeps its own."""
        pid = pid or secrets.token_urlsafe(18)
        self.sessions[sid] = (pid, self.store.delivered_upto())
        return pid

    async def claim(
        self, sid: str, user_id: str, namespace: str, auth: dict[str, Any]
    ) -> Session | None:
        """The session ``auth`` names, if it is this user's and its events are still held.

        Anything else (unknown or expired pid, another user's, an offset not held)
        is None: the caller goes on with a fresh connection. On success the
        connection holds live events until :meth:`replay`; the caller re-enters the
        session's rooms and then calls :meth:`catch_up`.
        """
        pid = auth.get("pid")
        if not isinstance(pid, str) or not 0 < len(pid) <= 64:
            return None
        session = await self.store.take_session(pid, user_id, namespace)
        if session is None or (session.user_id, session.namespace) != (user_id, namespace):
            return None
        claimed = auth.get("offset")
        offset = _resume_from(claimed, session)
        if offset is None:
            return None
        missed = await self.store.read_after(offset, claimed)
        if missed is None:
            return None
        self.opt_in(sid, pid)
        self._restoring[sid] = _Restore([m for m in missed if _addressed_to(m[1], session)])
        self._restoring[sid].read_upto = missed[-1][0] if missed else offset
        return session

    async def catch_up(self, sid: str, session: Session) -> None:
        """Read what was logged while the rooms were being re-entered (live ones are held)."""
        restore = self._restoring.get(sid)
        if restore is None:
            return
        more = await self.store.read_after(restore.read_upto) or []
        restore.missed += [m for m in more if _addressed_to(m[1], session)]

    def forget(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        self._restoring.pop(sid, None)
        self._replayed_upto.pop(sid, None)

    async def persist(self, sid: str, session: Session, reason: str | None) -> None:
        """Keep a dropped connection's session for max_disconnection seconds."""
        opted = self.sessions.get(sid)
        self.forget(sid)
        if opted is None or reason not in RECOVERABLE_REASONS:
            return
        pid, session.offset = opted
        session.delivered = self.store.delivered_upto()
        await self.store.save_session(pid, session, self.max_disconnection)

    def pid_of(self, sid: str) -> str | None:
        opted = self.sessions.get(sid)
        return opted[0] if opted else None

    async def replay(self, sid: str, eio_sid: str, namespace: str) -> None:
        """After the CONNECT answer: the missed events, then those held meanwhile."""
        restore = self._restoring.pop(sid, None)
        if restore is None:
            return
        sent: set[str] = set()
        for offset, message in restore.missed:
            await self._send(eio_sid, namespace, message["event"], message_args(message), offset)
            sent.add(offset)
        for offset, event, args in restore.held:
            if offset not in sent:
                await self._send(eio_sid, namespace, event, args, offset)
                sent.add(offset)
        keys = [k for k in map(parse_offset, sent) if k is not None]
        if keys:
            self._replayed_upto[sid] = max(keys)

    async def _send(
        self, eio_sid: str, namespace: str, event: str, args: list[Any], offset: str
    ) -> None:
        for pkt in _encode(self.server, namespace, [event, *args, offset]):
            await self.server._send_eio_packet(eio_sid, pkt)

    # --- delivery ------------------------------------------------------------------

    async def deliver(
        self,
        manager: socketio.AsyncManager,
        event: str,
        args: list[Any],
        namespace: str,
        room: Any,
        skip_sid: Any,
        offset: str | None,
    ) -> None:
        """This node's part of an emit without callback: python-socketio's
        ``AsyncManager.emit``, but opted-in connections get ``offset`` appended."""
        if namespace not in manager.rooms:
            return
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        plain: list[Any] | None = None
        tagged: list[Any] | None = None
        tasks = []
        for sid, eio_sid in manager.get_participants(namespace, room):
            if sid in skip:
                continue
            if offset is not None and sid in self.sessions:
                if not self._take_live(sid, offset, event, args):
                    continue
                tagged = tagged or _encode(self.server, namespace, [event, *args, offset])
                pkts = tagged
            else:
                plain = plain or _encode(self.server, namespace, [event, *args])
                pkts = plain
            for pkt in pkts:
                tasks.append(asyncio.create_task(self.server._send_eio_packet(eio_sid, pkt)))
        if tasks:
            await asyncio.wait(tasks)

    def _take_live(self, sid: str, offset: str, event: str, args: list[Any]) -> bool:
        """Whether to send a live event now; held or dropped (already replayed) if not."""
        restore = self._restoring.get(sid)
        if restore is not None:
            restore.held.append((offset, event, args))
            return False
        upto = self._replayed_upto.get(sid)
        if upto is not None:
            key = parse_offset(offset)
            if key is not None and key <= upto:
                return False
        return True


def _encode(server: Any, namespace: str, data: list[Any]) -> list[Any]:
    pkt = server.packet_class(packet.EVENT, namespace=namespace, data=data)
    encoded = pkt.encode()
    if not isinstance(encoded, list):
        encoded = [encoded]
    return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]


def emit_args(data: Any) -> list[Any]:
    """python-socketio's rule: a tuple is several arguments, None none, else one."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


class MemoryEventLog:
    """The single-process event log and session store, bounded by age and size."""

    def __init__(self, max_age: float, max_events: int) -> None:
        self.max_age, self.max_events = max_age, max_events
        self._epoch = int(time.time() * 1000)
        self._seq = 0
        self._events: collections.deque[tuple[float, Offset, str, dict[str, Any]]] = (
            collections.deque()
        )
        self._dropped_upto: Offset = (0, 0)
        self._sessions: dict[str, tuple[float, Session]] = {}

    def append(self, message: dict[str, Any]) -> str:
        self._seq += 1
        key = (self._epoch, self._seq)
        offset = f"{key[0]}-{key[1]}"
        now = time.monotonic()
        self._events.append((now, key, offset, message))
        self._trim(now)
        return offset

    def _trim(self, now: float) -> None:
        events = self._events
        while events and (len(events) > self.max_events or now - events[0][0] > self.max_age):
            self._dropped_upto = events.popleft()[1]

    def delivered_upto(self) -> str:
        return f"{self._epoch}-{self._seq}"  # one process: delivered as logged

    async def save_session(self, pid: str, session: Session, ttl: float) -> None:
        now = time.monotonic()
        # Expired sessions go as new ones come: the store never outgrows one window.
        for old in [p for p, (until, _) in self._sessions.items() if until <= now]:
            del self._sessions[old]
        self._sessions[pid] = (now + ttl, session)

    async def take_session(self, pid: str, user_id: str, namespace: str) -> Session | None:
        until, session = self._sessions.get(pid, (0.0, None))
        if session is None or until <= time.monotonic():
            return None
        if (session.user_id, session.namespace) != (user_id, namespace):
            return None
        del self._sessions[pid]
        return session

    async def read_after(
        self, offset: str, claimed: str | None = None
    ) -> list[tuple[str, dict[str, Any]]] | None:
        key = parse_offset(offset)
        newest = (self._epoch, self._seq)
        self._trim(time.monotonic())
        if key is None or key < self._dropped_upto or not _at_most(claimed or offset, newest):
            return None
        return [(o, m) for _, k, o, m in self._events if k > key]


class MemoryLogManager(socketio.AsyncManager):
    """The single-process manager with recovery on: every broadcast is logged first."""

    def __init__(self, log: MemoryEventLog) -> None:
        super().__init__()
        self.event_log = log
        self.recovery: Recovery | None = None

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or self.recovery is None:
            await super().emit(event, data, namespace, room, skip_sid, callback, **kwargs)
            return
        args = emit_args(data)
        message = {"method": "emit", "event": event, "data": args, "namespace": namespace}
        message |= {"room": room, "skip_sid": skip_sid}
        offset = self.event_log.append(message)
        await self.recovery.deliver(self, event, args, namespace, room, skip_sid, offset)


def restorable_rooms(rooms: Iterable[str], sid: str) -> list[str]:
    """A connection's rooms worth restoring: all but its own sid room."""
    return [r for r in rooms if r is not None and r != sid]
