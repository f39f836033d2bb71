"""The real server through its CLI: every Engine.IO transport, health and readiness."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from tests.conftest import base_config
from tests.support.clients import OVERSIZED_HEADER_HANDSHAKE, eventually, http, make_token


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]])
async def test_each_transport_connects_and_acks(start_server, clients, transports):
    server = start_server()
    client = await clients(server.url, make_token("alice"), transports=transports)
    ack = await client.call("ping", {})
    assert ack == {"ok": True, "data": {"status": "online"}}
    expected = "websocket" if "websocket" in transports else "polling"
    assert client.sio.transport() == expected


def test_health_and_ready(start_server):
    server = start_server()
    for path in ("/health", "/ready"):
        with urllib.request.urlopen(server.url + path, timeout=5) as resp:
            assert resp.status == 200
            assert json.load(resp)["ok"] is True


async def test_polling_disconnect_is_prompt(start_server, clients):
    # python-engineio leaves the pending long-poll waiting for the ping interval
    # (25 s) after a client's close; our server wakes it (sanic_rt/sio_server.py).
    server = start_server()
    client = await clients(server.url, make_token("alice"), transports=["polling"])
    await asyncio.wait_for(client.close(), timeout=5)
    assert not client.sio.connected


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_oversized_packet_closes_only_that_client(start_server, clients, transports):
    server = start_server(base_config(server={"max_payload_bytes": 4096}))
    victim = await clients(server.url, make_token("alice"), transports=transports)
    bystander = await clients(server.url, make_token("bob"))
    assert (await victim.call("ping", {"pad": "x" * 1000}))["ok"]
    await victim.sio.emit("ping", {"pad": "x" * 20_000}, namespace="/chats")
    await eventually(lambda: not victim.sio.connected or victim.sio.eio.state != "connected")
    assert (await bystander.call("ping", {}))["ok"]
    assert server.alive and "Traceback" not in server.log()
    await victim.sio.eio.disconnect(abort=True)


async def test_websocket_handshake_with_an_oversized_header_is_answered(start_server):
    # uvicorn leaves this client waiting with the socket open; sanic_rt.server
    # writes the 431 that websockets prepared (docs/development/SERVING_MODE.md).
    server = start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(OVERSIZED_HEADER_HANDSHAKE)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    assert status_line.startswith(b"HTTP/1.1 431")
    assert await asyncio.wait_for(reader.read(), timeout=5) is not None  # closed by the server
    writer.close()


async def test_oversized_request_heads_are_refused(start_server):
    server = start_server()
    big = {"X-Padding": "p" * 20_000}
    status, _ = await http("GET", server.url + "/socket.io/?EIO=4&transport=polling", headers=big)
    assert status == 431
    status, _ = await http("GET", server.url + "/health", headers={"X-Padding": "p" * 8_000})
    assert status == 200
