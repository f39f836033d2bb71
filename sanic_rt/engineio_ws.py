"""python-engineio's websocket transport without the per-packet task and timers.

python-engineio 4.x (``engineio/async_socket.py: AsyncSocket._websocket_handler``)
reads each incoming packet through a new task (``asyncio.ensure_future`` of the
read) awaited with ``asyncio.wait_for``, and its writer task takes each outgoing
packet through ``AsyncSocket.poll``, another ``wait_for`` (a task, a future and a
timer handle each) on the socket's queue. Both timeouts only detect a silent
client. Here the reader awaits the websocket directly under one idle deadline
per connection that is re-armed only when it fires, and the writer awaits the
queue directly: the reader's deadline already ends a silent connection, and it
wakes the writer with the same ``None`` python-engineio uses.

What python-engineio offers to hook into is its async driver table
(``AsyncServer._async['websocket']``, the ASGI ``WebSocket`` class from
``engineio/async_drivers/asgi.py``), which is handed the socket's bound
``_websocket_handler``: :class:`LeanWebSocket` runs :func:`serve_websocket` on
that socket instead. tests/test_upstream_overrides.py fails if either upstream piece
changes. docs/upstream/python-engineio-websocket-loop.patch is the same change
made in python-engineio itself.

Per idle connection (docs/performance.md, "RSS per connection"), the server
also keeps less: the socket's queue is a :class:`~sanic_rt.lean_asyncio.LeanQueue`
(``AsyncServer.create_queue``, python-engineio's own hook for it); the pings of
every socket share one timer per due time (:class:`PingTimer`) instead of a task
sleeping ``ping_interval`` per socket (``AsyncSocket.schedule_ping`` starts
``_send_ping`` through ``AsyncServer.start_background_task``, which we take
over for that one target); and the handshake environ, which python-socketio
keeps for the connection's life, loses the websocket handshake's own headers
once it is accepted (:data:`HANDSHAKE_ONLY`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import engineio
from engineio import async_socket
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi

from .lean_asyncio import LeanQueue

log = logging.getLogger("sanic_rt.engineio")


#: environ keys only the websocket handshake reads (python-socketio keeps the environ
#: of a connection that starts on websocket; plugins see the rest of it)
HANDSHAKE_ONLY = (
    "HTTP_SEC_WEBSOCKET_KEY",
    "HTTP_SEC_WEBSOCKET_VERSION",
    "HTTP_SEC_WEBSOCKET_EXTENSIONS",
)


class LeanWebSocket(eio_asgi.WebSocket):
    """python-engineio's ASGI websocket wrapper, serving the socket with :func:`serve_websocket`."""

    async def __call__(self, environ: dict[str, Any]) -> str:
        # As upstream WebSocket.__call__, but not through handler(self).
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        for key in HANDSHAKE_ONLY:
            environ.pop(key, None)
        await serve_websocket(self.handler.__self__, self)
        return ""  # send nothing as response


class GatewayEngineIOServer(engineio.AsyncServer):
    """python-engineio's server with :class:`LeanWebSocket` as its ASGI websocket driver."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The driver table is a module-level dict shared by every server: copy it.
        drivers: dict[str, Any] = self._async  # type: ignore[has-type]
        if drivers.get("websocket") is eio_asgi.WebSocket:
            self._async = {**drivers, "websocket": LeanWebSocket}
        self._ping_timer = PingTimer()

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        """Every socket's packet queue (``BaseSocket.__init__``): a lean one."""
        return LeanQueue(*args, **kwargs)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """As upstream, except a socket's next ping, which :class:`PingTimer` sends."""
        if getattr(target, "__func__", None) is async_socket.AsyncSocket._send_ping:
            self._ping_timer.schedule(target.__self__)
            return None  # AsyncSocket.schedule_ping ignores the task
        return super().start_background_task(target, *args, **kwargs)


class PingTimer:
    """python-engineio's ``AsyncSocket._send_ping`` for every socket, one timer per slot.

    Upstream starts a task per socket and ping (``asyncio.sleep(ping_interval)``,
    then set ``last_ping`` and send a PING). Here a socket joins the slot of
    its due time rounded up to ``RESOLUTION``: one timer handle per slot, not a
    task, a coroutine and a sleep per socket. A PING goes out at most
    ``RESOLUTION`` later than upstream's would.
    """

    RESOLUTION = 0.25
    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[float, list[Any]] = {}

    def schedule(self, socket: Any) -> None:
        loop = asyncio.get_running_loop()
        step = self.RESOLUTION
        due = math.ceil((loop.time() + socket.server.ping_interval) / step) * step
        slot = self._slots.get(due)
        if slot is None:
            slot = self._slots[due] = []
            loop.call_at(due, self._fire, due)
        slot.append(socket)

    def _fire(self, due: float) -> None:
        ping = eio_packet.PING
        for socket in self._slots.pop(due, ()):
            if socket.closing or socket.closed:
                continue
            # upstream: last_ping, then send(): its ping-timeout check cannot fail
            # right after last_ping is set, and the queue is unbounded.
            socket.last_ping = time.time()
            socket.queue.put_nowait(eio_packet.Packet(ping))


class _IdleDeadline:
    """Ends the ``asyncio.timeout`` block once a read waited ``limit`` seconds.

    Like upstream's ``wait_for`` around each read (the time spent handling a
    packet does not count), but one timer per connection, re-armed when it
    fires (about once per ping interval), instead of one per packet.
    """

    __slots__ = ("handle", "limit", "loop", "timeout", "waiting", "waiting_since")

    def __init__(self, timeout: asyncio.Timeout, limit: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout, self.limit = timeout, limit
        self.waiting, self.waiting_since = False, self.loop.time()
        self.handle = self.loop.call_at(self.waiting_since + limit, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.waiting and now - self.waiting_since >= self.limit:
            self.timeout.reschedule(now)  # expire: the read in progress is cancelled
            return
        due = self.waiting_since + self.limit if self.waiting else now + self.limit
        self.handle = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        self.handle.cancel()


async def serve_websocket(socket: Any, ws: Any) -> None:
    """``AsyncSocket._websocket_handler`` of python-engineio 4.x, leaner per packet."""
    server = socket.server
    if socket.connected:
        if not await _upgrade(socket, ws):
            return
    else:
        socket.connected = True
        socket.upgraded = True
    writer_task = asyncio.ensure_future(_write_loop(socket, ws))
    try:
        await _read_loop(socket, ws)
    finally:
        await socket.queue.put(None)  # unlock the writer task so it can exit
        await writer_task
        await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _upgrade(socket: Any, ws: Any) -> bool:
    """The polling -> websocket probe, as upstream (once per connection, not per packet)."""
    server = socket.server
    socket.upgrading = True  # hold packet sends during the upgrade
    try:
        pkt = eio_packet.Packet(encoded_packet=await _receive(socket, ws))
    except (OSError, ValueError):
        socket.upgrading = False
        return False
    if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
        server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
        socket.upgrading = False
        return False
    await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end poll
    try:
        pkt = eio_packet.Packet(encoded_packet=await _receive(socket, ws))
    except (OSError, ValueError):
        socket.upgrading = False
        return False
    if pkt.packet_type != eio_packet.UPGRADE:
        socket.upgraded = False
        server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet", socket.sid)
        socket.upgrading = False
        return False
    socket.upgraded = True
    socket.upgrading = False
    return True


async def _receive(socket: Any, ws: Any) -> Any:
    data = await ws.wait()
    if data and len(data) > socket.server.max_http_buffer_size:
        raise ValueError("packet is too large")
    return data


async def _read_loop(socket: Any, ws: Any) -> None:
    server = socket.server
    limit = server.ping_interval + server.ping_timeout
    max_size = server.max_http_buffer_size
    try:
        async with asyncio.timeout(None) as timeout:
            deadline = _IdleDeadline(timeout, limit)
            try:
                while True:
                    deadline.waiting, deadline.waiting_since = True, deadline.loop.time()
                    data = await ws.wait()
                    deadline.waiting = False
                    if data is None:
                        return  # connection closed by client
                    if len(data) > max_size:
                        return  # as upstream: too large ends the connection
                    if socket.closed or not await _dispatch(socket, data):
                        # Closed by the server (a ping timeout in python-engineio's
                        # service task, a CLOSE packet): upstream's writer ends the
                        # websocket when poll() times out; ours has no timeout.
                        return
            finally:
                deadline.cancel()
    except (TimeoutError, OSError):
        return  # silent for ping interval + timeout, or the websocket is gone
    except asyncio.CancelledError:
        # As upstream: a cancelled handler (server shutdown) still closes the
        # socket, so the app sees the disconnect.
        return


async def _dispatch(socket: Any, data: Any) -> bool:
    """Decode and handle one packet; False ends the connection."""
    try:
        pkt = eio_packet.Packet(encoded_packet=data)
    except (ValueError, IndexError, TypeError):
        # Upstream lets this escape its handler (a traceback from the ASGI
        # server, then a 1011 close); we end the connection without one.
        log.info("%s: undecodable Engine.IO packet, closing", socket.sid)
        return False
    try:
        await socket.receive(pkt)
    except engineio.exceptions.UnknownPacketError:
        pass
    except engineio.exceptions.SocketIsClosedError:
        socket.server.logger.info("Receive error -- socket is closed")
        return False
    except Exception:
        # As upstream: log the error and keep the connection.
        socket.server.logger.exception("Unknown receive error")
    return True


async def _write_loop(socket: Any, ws: Any) -> None:
    """Upstream's writer without ``poll``'s ``wait_for``: the reader's deadline ends silence."""
    queue = socket.queue
    try:
        while True:
            pkt = await queue.get()
            queue.task_done()
            if pkt is None:
                return  # the reader ended, or the socket was closed
            await ws.send(pkt.encode())
    except Exception:
        return  # as upstream: any send failure ends the writer
    finally:
        await ws.close()
