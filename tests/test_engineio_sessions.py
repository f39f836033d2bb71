"""Issue 11, findings 2 and 9: what a raw Engine.IO client can hold on the server.

Binary packets are refused by closing the session before anything is
buffered; a session with no namespace connection is closed after
``[server] connect_timeout``. Both over the real server, with a raw
websocket speaking Engine.IO 4 / Socket.IO 5 by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from sanic_rt.testing import config_from_dict, running_app
from tests.conftest import base_config
from tests.support.clients import http, make_token

FRAME = b"\0" * 900_000  # under max_payload_bytes, so only the binary rule refuses it
FRAMES = 60
RSS_SLACK_KB = 25_000  # the frames add up to 54 MB if buffered


class RawSession:
    """One Engine.IO session over a websocket, driven packet by packet."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws

    @classmethod
    async def open(cls, url: str) -> RawSession:
        session = aiohttp.ClientSession()
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        ws = await session.ws_connect(ws_url)
        self = cls(session, ws)
        assert (await self.text()).startswith("0")  # Engine.IO OPEN
        return self

    async def text(self, timeout: float = 5) -> str:
        msg = await self.ws.receive(timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return msg.data

    async def connect_namespace(self, namespace: str, token: str) -> str:
        await self.ws.send_str(f"40{namespace}," + json.dumps({"token": token}))
        return await self.text()

    async def wait_closed(self, timeout: float) -> bool:
        """Read (and drop) what the server sends until it closes the websocket."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await self.ws.receive(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return True
            if msg.type == aiohttp.WSMsgType.ERROR:
                return True
        return False

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.session.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_binary_packets_close_the_session_before_anything_is_buffered(start_server, clients):
    server = start_server()
    bystander = await clients(server.url, make_token("bob"))
    assert (await bystander.call("chat:join", {"conversation_id": "c1"}))["ok"]
    rss_before = rss_kb(server.proc.pid)
    attacker = await RawSession.open(server.url)
    try:
        assert (await attacker.connect_namespace("/chats", make_token("mallory"))).startswith(
            "40/chats,"
        )
        # A binary EVENT announcing 451000 attachments, then the attachments.
        header = '451000-/chats,["chat:message",{"_placeholder":true,"num":0}]'
        await attacker.ws.send_str(header)
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(FRAMES):
                await attacker.ws.send_bytes(FRAME)
        assert await attacker.wait_closed(10), "the server kept the binary sender's session open"
    finally:
        await attacker.close()
    assert rss_kb(server.proc.pid) - rss_before < RSS_SLACK_KB
    assert (await bystander.call("chat:message", {"conversation_id": "c1", "text": "hi"}))["ok"]
    assert server.log().count("binary packets are not accepted") == 1
    assert "Traceback" not in server.log()


async def test_a_bare_binary_frame_closes_the_session(start_server, clients):
    server = start_server()
    attacker = await RawSession.open(server.url)
    try:
        await attacker.connect_namespace("/chats", make_token("mallory"))
        await attacker.ws.send_bytes(b"\x04hello")
        assert await attacker.wait_closed(10)
    finally:
        await attacker.close()


async def test_sessions_without_a_namespace_connection_are_closed(start_server, clients):
    server = start_server(base_config(server={"connect_timeout": 1.0}))
    member = await clients(server.url, make_token("alice"))
    left = await RawSession.open(server.url)
    kicked = await RawSession.open(server.url)
    idle = await RawSession.open(server.url)  # never asks for a namespace
    refused = await RawSession.open(server.url)
    sessions = (idle, refused, left, kicked)
    try:
        assert (await left.connect_namespace("/chats", make_token("carol"))).startswith("40")
        assert (await kicked.connect_namespace("/chats", make_token("dave"))).startswith("40")
        answer = await refused.connect_namespace("/chats", "not-a-token")
        assert answer.startswith("44/chats,")  # CONNECT_ERROR
        for session in (idle, refused):
            assert await session.wait_closed(10), "a session without a namespace stayed open"
        # Opened earlier, left and kicked are past their first deadline, still connected.
        assert not left.ws.closed and not kicked.ws.closed
        await left.ws.send_str("41/chats,")  # leaves its only namespace
        status, _ = await http("POST", server.url + "/api/v1/users/dave/disconnect")
        assert status == 200  # the server closes dave's namespace connection, not the session
        for session in (left, kicked):
            assert await session.wait_closed(10), "a session without a namespace stayed open"
    finally:
        for session in sessions:
            await session.close()
    # alice connected before all of them and has outlived their timeouts.
    assert member.sio.connected
    assert (await member.call("ping", {}))["ok"]
    assert "Traceback" not in server.log()


async def test_a_session_closed_for_its_timeout_leaves_no_task_waiting() -> None:
    """A polling client that opened a session and never came back: closed, nothing hangs.

    Closing through python-engineio's ``disconnect`` waited for the session's queue to
    drain, which only the gone client's next GET would do: the closing task hung until
    the collector destroyed it and logged an ERROR, once per such session.
    """
    config = config_from_dict(base_config(server={"connect_timeout": 0.3}))
    async with running_app(config) as (app, url):
        sio = app.ctx.gateway.sio
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/socket.io/?EIO=4&transport=polling") as resp:
                assert resp.status == 200
                opened = json.loads((await resp.text())[1:])  # "0{...}": Engine.IO OPEN
        sid = opened["sid"]
        assert sid in sio.eio.sockets

        def closing_tasks() -> list[asyncio.Task[Any]]:
            return [
                t
                for t in asyncio.all_tasks()
                if "close_session" in t.get_coro().__qualname__  # type: ignore[union-attr]
            ]

        deadline = time.monotonic() + 10
        while sid in sio.eio.sockets or closing_tasks():
            assert time.monotonic() < deadline, (sid in sio.eio.sockets, closing_tasks())
            await asyncio.sleep(0.05)
