"""Issue 17 item 2's per-connection memory changes off (``bench/baseline.py`` imports this).

``python -m bench.conn_memory`` also runs this alone (its "main" side), to tell
these changes from the per-packet ones. Bench-only; the app has no switch for this.
"""

from __future__ import annotations

import asyncio

import engineio

import sanic_rt.engineio_ws
import sanic_rt.server
import sanic_rt.sio_server
from sanic_rt.engineio_ws import GatewayEngineIOServer
from sanic_rt.server import WebSocketProtocol

# asyncio's own queue and event (with their deques)
sanic_rt.engineio_ws.LeanQueue = asyncio.Queue  # type: ignore[misc]
sanic_rt.server.LeanQueue = asyncio.Queue  # type: ignore[misc]
sanic_rt.server.LeanEvent = asyncio.Event  # type: ignore[misc]
# a ping task per socket, as python-engineio
GatewayEngineIOServer.start_background_task = engineio.AsyncServer.start_background_task  # type: ignore[method-assign]
# the handshake's headers kept in websockets' parser, the environ and the ASGI scope
sanic_rt.engineio_ws.HANDSHAKE_ONLY = ()
sanic_rt.sio_server.drop_scope_headers = lambda environ: None
WebSocketProtocol.drop_handshake_headers = False
