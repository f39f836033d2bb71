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
connection for a body nobody reads again (docs/performance.md).

Websocket packets are read and written without python-engineio's per-packet
task and timers (sanic_rt/engineio_ws.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from socketio import packet

from . import metrics
from .backend import BackendUnavailable
from .engineio_ws import GatewayEngineIOServer
from .namespace import handler_name
from .recovery import Recovery


class GatewayServer(socketio.AsyncServer):
    def _engineio_server_class(self) -> type:
        # python-socketio's factory for its Engine.IO server (async_server.py).
        return GatewayEngineIOServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        # A connect is always a GET: its body was never read and never will be.
        environ.pop("wsgi.input", None)
        return await super()._handle_eio_connect(eio_sid, environ)

    #: seconds an emit through the cluster manager may take; None without one
    emit_timeout: float | None = None
    #: connection state recovery ([recovery] enabled); None when off
    recovery: Recovery | None = None

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        # Connection state recovery: python-socketio's _handle_connect answers a
        # CONNECT with ``{"sid": sid}`` through this method; an opted-in connection's
        # answer also carries its ``pid``, and a restored one's missed events follow
        # it, before anything new (tests/test_stream_bus.py checks the upstream code).
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
            metrics.cluster_emit_error()
            raise BackendUnavailable("the cluster message bus did not answer") from None

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str | None = None) -> None:
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
