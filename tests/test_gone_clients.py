"""A client that goes away in the middle of its connect leaves no connection behind.

The soak (bench/soak.py) showed the server holding more connections than the
clients had open under churn; those were clients that connected after the load
generator had counted (docs/performance.md). What it relies on is tested here: a
websocket client that sends its ``/chats`` CONNECT and closes while the server's
connect handler still waits on Redis. python-socketio skips the disconnect of a
connection whose connect handler has not returned (``manager.pending_connect``),
so the close must not be read before the connect is done: python-socketio runs
Engine.IO's message handler inline (``async_handlers=False``), and our websocket
reader (sanic_rt/engineio_ws.py) awaits each packet's handling before the next
read. Were the close read while the connect waits, the connection would stay
registered for ever, announced online and counted in the stats.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import websockets

from tests.conftest import base_config
from tests.support.clients import eventually, http, make_token, ws_url
from tests.support.metrics import scrape, value

CLIENTS = 5


async def metric(url: str, name: str, **labels: str) -> float:
    return value(await scrape(url), name, **labels) or 0.0


async def stats(url: str) -> dict[str, Any]:
    status, body = await http("GET", f"{url}/api/v1/presence/stats")
    assert status == 200, body
    data: dict[str, Any] = body["data"]
    return data


async def test_a_client_gone_while_its_connect_waits_on_redis_leaves_no_connection(
    redis_proc: Any, start_server: Any
) -> None:
    redis_url = f"redis://127.0.0.1:{redis_proc.port}/0"
    server = start_server(base_config(presence={"backend": "redis", "redis": {"url": redis_url}}))
    connects_before = await metric(server.url, "sanic_rt_connects_total", namespace="/chats")

    sockets = []
    for _ in range(CLIENTS):
        ws = await websockets.connect(ws_url(server.url))
        opened = await ws.recv()
        assert isinstance(opened, str) and opened.startswith("0")  # Engine.IO OPEN
        sockets.append(ws)
    redis_proc.signal(signal.SIGSTOP)  # every connect handler now waits on Redis
    try:
        for i, ws in enumerate(sockets):
            await ws.send("40/chats," + json.dumps({"token": make_token(f"gone{i}")}))
        # The closing handshake completes (the server answers the close frame) while
        # the connects are still waiting: the clients are gone.
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), 10)
    finally:
        redis_proc.signal(signal.SIGCONT)

    async def all_admitted() -> bool:
        connects = await metric(server.url, "sanic_rt_connects_total", namespace="/chats")
        return connects - connects_before == CLIENTS

    # The connects went through once Redis answered (else this test shows nothing) ...
    assert await eventually(all_admitted, timeout=15, interval=0.1)

    async def nothing_left() -> bool:
        now = await stats(server.url)
        open_here = await metric(server.url, "sanic_rt_connections", namespace="/chats")
        return now["connections"] == 0 and now["online_users"] == 0 and open_here == 0

    # ... and their clients' closes were handled after them.
    assert await eventually(nothing_left, timeout=15, interval=0.1)
