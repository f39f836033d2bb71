"""Our Socket.IO server: python-socketio's AsyncServer with a transport fix.

python-engineio closes a long-polling socket on the client's CLOSE packet with
``abort=True``, which leaves the client's pending GET waiting until the ping
interval ends (25 s by default): python-socketio's client blocks that long in
``disconnect()``. We wake the pending GET once the socket is closed
(tests/test_transports.py::test_polling_disconnect_is_prompt shows it).
"""

from __future__ import annotations

import socketio


class GatewayServer(socketio.AsyncServer):
    async def _handle_eio_disconnect(self, eio_sid: str, reason: str | None = None) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(None)
