"""Review of issue 17's websocket loop (sanic_rt/engineio_ws.py) by a hostile client.

Over the real server through its CLI, with a raw websocket speaking Engine.IO 4 /
Socket.IO 5 by hand.
"""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from tests.conftest import base_config
from tests.support.clients import http, make_token, ws_url


async def test_a_session_closed_by_the_server_ends_its_websocket_though_the_client_keeps_talking(
    start_server,
) -> None:
    # The service task closes an Engine.IO session whose client answers no PING
    # (python-engineio AsyncServer._service_task -> check_ping_timeout). Upstream's
    # writer then ends the websocket within ping interval + timeout (poll()'s
    # wait_for); our writer waits on the queue with no deadline and our reader's
    # idle deadline never fires for a client that keeps sending: the websocket
    # outlived its session for ever, past the per-user cap and connect_timeout.
    server = start_server(base_config(server={"ping_interval": 1, "ping_timeout": 1}))
    token = make_token("mallory")
    async with websockets.connect(ws_url(server.url)) as ws:
        assert (await ws.recv()).startswith("0")  # OPEN; PINGs are never answered
        await ws.send("40/chats," + json.dumps({"token": token}))
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("40/chats,")
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                await ws.send('42/chats,["ping",{}]')
                await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                closed = True
        assert closed, "the websocket outlived its closed Engine.IO session"
    status, body = await http("GET", server.url + "/api/v1/presence/stats")
    assert status == 200 and body["data"]["connections"] == 0, body


async def test_deeply_nested_json_is_a_decode_error_not_an_asgi_exception(start_server) -> None:
    # python-engineio's Packet.decode json-decodes every packet's payload and
    # falls back to the raw text on ValueError; the standard library raises
    # RecursionError on deep nesting (orjson: JSONDecodeError past depth 1024,
    # which sanic_rt/wire_json.py hands to the standard library). It escaped the
    # websocket handler: one uvicorn traceback per frame, before any token.
    server = start_server(base_config())
    async with websockets.connect(ws_url(server.url)) as ws:
        assert (await ws.recv()).startswith("0")
        await ws.send("4" + "[" * 5000)
        # Packets are handled in order: the answer to this connect comes after.
        await ws.send("40/chats," + json.dumps({"token": make_token("mallory")}))
        answer = await asyncio.wait_for(ws.recv(), 5)
        while answer == "2":  # a PING
            answer = await asyncio.wait_for(ws.recv(), 5)
        assert answer.startswith("40/chats,"), answer
    assert "Exception in ASGI application" not in server.log(), server.log()[-2000:]
