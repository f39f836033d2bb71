"""``python -m bench.baseline serve ...``: sanic-rt with issue 17's per-packet changes off.

The A side of ``python -m bench.ab``: the same checkout and process set-up, with
python-engineio's own JSON module and websocket driver instead of
``sanic_rt.wire_json`` and ``sanic_rt.engineio_ws``, and one backend call per
connect instead of coalesced ones; and item 2's per-connection memory
changes off (``bench/baseline_memory.py``). Bench-only; the app has no
switch for this.
"""

from __future__ import annotations

import sys

from engineio import json as engineio_json
from engineio.async_drivers import asgi

import bench.baseline_memory  # noqa: F401  (switches off as it is imported)
import sanic_rt.app
import sanic_rt.engineio_ws
from sanic_rt.backend import PresenceBackend
from sanic_rt.cli import main

sanic_rt.app.wire_json = engineio_json  # type: ignore[assignment]
sanic_rt.engineio_ws.LeanWebSocket = asgi.WebSocket  # type: ignore[misc]
PresenceBackend.batches_connects = property(lambda self: False)  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    sys.exit(main())
