"""Our Socket.IO server: python-socketio's AsyncServer with a transport fix and
bounded emits.

With a pub/sub manager every emit is a PUBLISH; python-socketio retries a
stalled Redis for about 10 s, holding the handler (and, events being handled
in order, the connection) that long and then dropping the message while the
sender was told ``ok``. Emits are bounded by ``[cluster] timeout`` and answer
``unavailable`` instead.

python-engineio closes a long-polling socket on the client's CLOSE packet with
``abort=True``, which leaves the client's pending GET waiting until the ping
interval ends (25 s by default): python-socketio's client blocks that long in
``disconnect()``. We wake the pending GET once the socket is closed
(tests/test_transports.py::test_polling_disconnect_is_prompt shows it).

The handshake's environ lives as long as the connection (python-socketio keeps
it for every namespace connect); its ``wsgi.input`` holds a request-body reader
whose class python-engineio's ASGI driver builds per request: ~3.3 KB per idle
connection for a body nobody reads again; and its ASGI scope a second copy of
the headers (docs/performance.md). Both are dropped at the Engine.IO connect.

sanic-rt uses no binary events. python-socketio buffers a binary packet's
attachments without limit until the count its header announced has arrived,
so a binary EVENT/ACK or any binary frame closes that Engine.IO session
(docs/security.md). An Engine.IO session with no namespace connection is
closed after ``[server] connect_timeout``: a refused client must not keep
its session (and its memory) alive by answering pings.

Websocket packets are read and written without python-engineio's per-packet
task and timers (sanic_rt/engineio_ws.py).

A Socket.IO packet whose payload is not JSON (or JSON beyond what the decoder
takes: nesting, integers past 4,300 digits) made python-socketio's packet
constructor raise inside python-engineio's message handler, and an EVENT whose
payload is not a list starting with a string made python-socketio's event
handler raise: a logged traceback and no answer, so the client's call waited
for its own timeout. Such an EVENT with an ack id is answered ``bad_request``;
anything else is dropped with one log line (flood-limited). So is an EVENT
named ``connect`` or ``disconnect``: python-socketio passes a client's event
name to the same ``_trigger_event`` that runs real connects and disconnects.

tests/test_upstream_overrides.py fails when the python-socketio code these
overrides rely on changes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import Any

import socketio
from socketio import packet

from . import metrics
from .engineio_ws import GatewayEngineIOServer
from .envelope import error
from .logs import OncePerInterval
from .managers import bus_unavailable
from .namespace import handler_name
from .recovery import Recovery

log = logging.getLogger("sanic_rt.server")
_BINARY_TYPES = (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))
#: what a client may send besides binary packets (CONNECT_ERROR is the server's)
_CLIENT_TYPES = frozenset(
    str(t) for t in (packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK)
)
#: events python-socketio raises itself (AsyncServer._trigger_event); never a client's
SERVER_EVENTS = frozenset({"connect", "disconnect"})
#: client-caused, so flood-limited: one line per message per interval
packet_log = logging.getLogger("sanic_rt.server.packets")
packet_log.addFilter(OncePerInterval())


class MalformedPacket(ValueError):
    """A Socket.IO packet that did not decode, with what its header said."""

    def __init__(self, reason: str, packet_type: Any, namespace: str | None, ack_id: Any) -> None:
        super().__init__(reason)
        self.packet_type = packet_type
        self.namespace = namespace
        self.ack_id = ack_id


class GatewayPacket(packet.Packet):  # type: ignore[misc]
    """python-socketio's packet (socketio/packet.py); a decode error names the header.

    ``Packet.decode`` parses the type, namespace and ack id before the JSON
    payload, so they are known when the payload fails.
    """

    def decode(self, encoded_packet: Any) -> Any:
        try:
            return super().decode(encoded_packet)
        except (ValueError, RecursionError) as err:
            raise MalformedPacket(
                str(err)[:100], self.packet_type, self.namespace, getattr(self, "id", None)
            ) from None


class GatewayServer(socketio.AsyncServer):
    def __init__(self, *args: Any, connect_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: seconds an Engine.IO session may live without a namespace connection; None: forever
        self.connect_timeout = connect_timeout
        self._connect_deadlines = ConnectDeadlines()

    def _engineio_server_class(self) -> type:
        # python-socketio's factory for its Engine.IO server (async_server.py).
        return GatewayEngineIOServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        # Extends socketio/async_server.py AsyncServer._handle_eio_connect (private),
        # which keeps ``environ`` for the connection's life.
        # A connect is always a GET: its body was never read and never will be.
        environ.pop("wsgi.input", None)
        drop_scope_headers(environ)
        self._connect_deadlines.watch(self, eio_sid)
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> Any:
        # Upstream (socketio/async_server.py, _handle_eio_message) keeps a binary
        # packet in self._binary_packet and appends every following frame to it:
        # refuse before anything is buffered.
        if isinstance(data, bytes) or (isinstance(data, str) and data[:1] in _BINARY_TYPES):
            if eio_sid in self.eio.sockets:  # frames already in flight find it gone
                log.warning("closed Engine.IO session: binary packets are not accepted")
                await self.close_session(eio_sid)
            return None
        if data[:1] not in _CLIENT_TYPES:  # upstream raises 'Unknown packet type.'
            packet_log.warning("unknown Socket.IO packet type from a client: %r", data[:1])
            return None
        try:
            return await super()._handle_eio_message(eio_sid, data)
        except MalformedPacket as bad:
            await self._answer_malformed(eio_sid, bad)
            return None

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> Any:
        # Upstream (socketio/async_server.py, _handle_event) takes data[0] as the
        # event name and hashes it: '42/chats,1{}' or '42/chats,1[[1]]' raised there.
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            reason = "an EVENT's payload must be a list starting with the event name"
            bad = MalformedPacket(reason, packet.EVENT, namespace, id)
            await self._answer_malformed(eio_sid, bad)
            return None
        if data[0] in SERVER_EVENTS:
            # _handle_event_internal hands data[0] to the _trigger_event that runs
            # real connects and disconnects: a client's '42/chats,["disconnect"]'
            # dropped its own state and count while staying connected.
            reason = f"event name {data[0]!r} is reserved"
            await self._answer_malformed(
                eio_sid, MalformedPacket(reason, packet.EVENT, namespace, id)
            )
            return None
        return await super()._handle_event(eio_sid, namespace, id, data)

    async def _answer_malformed(self, eio_sid: str, bad: MalformedPacket) -> None:
        packet_log.warning("malformed Socket.IO packet from a client: %s", bad)
        namespace = bad.namespace or "/"
        if bad.packet_type != packet.EVENT or not isinstance(bad.ack_id, int):
            return
        if self.manager.sid_from_eio_sid(eio_sid, namespace) is None:
            return
        reply = error("bad_request", f"malformed packet: {bad}")
        await self._send_packet(
            eio_sid, self.packet_class(packet.ACK, namespace=namespace, data=[reply], id=bad.ack_id)
        )

    async def _handle_disconnect(self, eio_sid: str, namespace: str, reason: Any = None) -> None:
        await super()._handle_disconnect(eio_sid, namespace, reason)
        self._watch_if_empty(eio_sid)

    async def disconnect(self, sid: str, namespace: str | None = None, **kwargs: Any) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace or "/")
        await super().disconnect(sid, namespace, **kwargs)
        if eio_sid is not None:  # a connection on this node, closed by the server
            self._watch_if_empty(eio_sid)

    def _watch_if_empty(self, eio_sid: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.closing and not self.has_namespace(eio_sid):
            # Its last namespace gone, the session gets connect_timeout to connect again.
            self._connect_deadlines.watch(self, eio_sid)

    async def close_session(self, eio_sid: str) -> None:
        """Close an Engine.IO session and its transport now."""
        socket = self.eio.sockets.pop(eio_sid, None)
        if socket is None:
            return
        # Not eio.disconnect(): it closes with wait=True, i.e. waits for the queue
        # to drain, which a gone polling client never does: the task hung until the
        # collector destroyed it ("Task was destroyed but it is pending!", one ERROR
        # line per such session under churn). Upstream's own ping-timeout close does
        # not wait either (engineio/async_socket.py, check_ping_timeout).
        await socket.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)
        if socket.upgraded:
            # The websocket's writer task ends on None and then closes the
            # websocket itself (engineio/async_socket.py, _websocket_handler).
            socket.queue.put_nowait(None)

    def has_namespace(self, eio_sid: str) -> bool:
        """Whether the Engine.IO session holds a namespace connection that completed."""
        manager = self.manager
        for namespace in list(manager.get_namespaces()):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and manager.is_connected(sid, namespace):
                return True
        return False

    #: seconds an emit through the cluster manager may take; None without one
    emit_timeout: float | None = None
    #: connection state recovery ([recovery] enabled); None when off
    recovery: Recovery | None = None

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        # Connection state recovery: python-socketio's _handle_connect answers a
        # CONNECT with ``{"sid": sid}`` through this method; an opted-in connection's
        # answer also carries its ``pid``, and a restored one's missed events follow
        # it, before anything new (tests/test_upstream_overrides.py checks the upstream code).
        recovery = self.recovery
        sid = pkt.data.get("sid") if isinstance(pkt.data, dict) else None
        pid = None
        if recovery is not None and pkt.packet_type == packet.CONNECT and sid:
            pid = recovery.pid_of(sid)
            if pid is not None:
                pkt.data = {**pkt.data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)
        if recovery is not None and pid is not None and sid:
            await recovery.replay(sid, eio_sid, pkt.namespace or "/")

    async def emit(self, *args: Any, **kwargs: Any) -> None:
        if self.emit_timeout is None:
            return await super().emit(*args, **kwargs)
        try:
            async with asyncio.timeout(self.emit_timeout):
                return await super().emit(*args, **kwargs)
        except TimeoutError:
            raise bus_unavailable("the cluster message bus did not answer") from None

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str | None = None) -> None:
        # Extends socketio/async_server.py AsyncServer._handle_eio_disconnect (private);
        # the wake-up uses engineio/async_socket.py AsyncSocket.queue, whose None
        # ends a pending long-poll GET (tests/test_transports.py fails without it).
        await super()._handle_eio_disconnect(eio_sid, reason)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(None)

    # --- metrics: python-socketio's one dispatch point for every namespace ---------

    async def _trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        if event == "connect":
            return await self._count_connect(namespace, args)
        if event == "disconnect":
            metrics.disconnected(namespace)
            return await super()._trigger_event(event, namespace, *args)
        started = metrics.now()
        reply = await super()._trigger_event(event, namespace, *args)
        metrics.event(namespace, event, reply, metrics.now() - started, self.knows_event)
        return reply

    async def _count_connect(self, namespace: str, args: tuple[Any, ...]) -> Any:
        try:
            admitted = await super()._trigger_event("connect", namespace, *args)
        except socketio.exceptions.ConnectionRefusedError as exc:
            data = exc.error_args.get("data")
            metrics.refused(namespace, data.get("code") if isinstance(data, dict) else None)
            raise
        if admitted is False:
            metrics.refused(namespace, None)
        else:
            metrics.connected(namespace)
        return admitted

    def knows_event(self, namespace: str, event: str) -> bool:
        """Whether ``event`` has a handler on ``namespace`` (else it counts as unknown)."""
        if event in self.handlers.get(namespace, ()):
            return True
        handler = self.namespace_handlers.get(namespace)
        return handler is not None and hasattr(handler, handler_name(event))


def drop_scope_headers(environ: dict[str, Any]) -> None:
    """Drop the second copy of the headers an Engine.IO connect's environ keeps.

    python-engineio's ASGI driver (``translate_request``) keeps the ASGI scope
    in the environ, and uvicorn keeps a websocket's scope for the connection's
    life: the scope's ``headers`` are every header again, as bytes. The
    environ's ``HTTP_*`` keys are what python-socketio and plugins read.
    """
    scope = environ.get("asgi.scope")
    if scope is None or not scope.get("headers"):
        return
    if scope.get("type") == "websocket":
        scope["headers"] = []  # uvicorn's websocket protocol reads them only before the app
    else:
        environ["asgi.scope"] = {**scope, "headers": []}  # the HTTP request is uvicorn's


class ConnectDeadlines:
    """One timer over a heap of (deadline, eio sid), like the token-expiry heap.

    No task or timer per session: a session is looked at once, at its deadline,
    and closed if by then it holds no namespace connection.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, server: GatewayServer, eio_sid: str) -> None:
        timeout = server.connect_timeout
        if timeout is None:
            return
        heapq.heappush(self._heap, (time.monotonic() + timeout, eio_sid))
        if self._timer is None:
            self._arm(server)

    def _arm(self, server: GatewayServer) -> None:
        if self._heap:
            delay = max(0.0, self._heap[0][0] - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._due, server)

    def _due(self, server: GatewayServer) -> None:
        self._timer = None
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, eio_sid = heapq.heappop(self._heap)
            if eio_sid in server.eio.sockets and not server.has_namespace(eio_sid):
                log.info("closed Engine.IO session: no namespace connection within the timeout")
                server.start_background_task(server.close_session, eio_sid)
        self._arm(server)
