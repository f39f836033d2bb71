"""The websocket transport without python-engineio's per-packet task (sanic_rt/engineio_ws.py).

The upstream code it replaces or hooks into is checked in tests/test_upstream_overrides.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import socketio
import websockets

from sanic_rt.engineio_ws import LeanWebSocket
from sanic_rt.testing import config_from_dict, running_app, token
from tests.support.clients import ws_url

SECRET = "e" * 32


class TaskCounter:
    """Counts tasks created on the running loop, by coroutine name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __enter__(self) -> TaskCounter:
        self.loop = asyncio.get_running_loop()
        self.previous = self.loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            self.names.append(getattr(coro, "__qualname__", ""))
            return asyncio.Task(coro, loop=loop, **kwargs)

        self.loop.set_task_factory(factory)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.set_task_factory(self.previous)


async def test_the_asgi_driver_is_ours_and_reads_without_a_task_per_packet() -> None:
    config = config_from_dict({"auth": {"secret": SECRET}})
    async with running_app(config) as (app, url):
        assert app.ctx.gateway.sio.eio._async["websocket"] is LeanWebSocket
        client = socketio.AsyncClient()
        await client.connect(
            url, namespaces=["/chats"], auth={"token": token(config, "u")}, transports=["websocket"]
        )
        try:
            with TaskCounter() as counter:
                for _ in range(30):
                    assert (await client.call("ping", {}, namespace="/chats", timeout=10))["ok"]
        finally:
            await client.disconnect()
    # python-engineio's reader makes one such task per packet received
    assert not [name for name in counter.names if "websocket_wait" in name]


async def test_upgrade_from_polling_still_works() -> None:
    config = config_from_dict({"auth": {"secret": SECRET}})
    async with running_app(config) as (_, url):
        client = socketio.AsyncClient()
        await client.connect(
            url,
            namespaces=["/chats"],
            auth={"token": token(config, "u")},
            transports=["polling", "websocket"],
        )
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while client.transport() != "websocket":
                assert asyncio.get_running_loop().time() < deadline, "no upgrade"
                await asyncio.sleep(0.02)
            assert (await client.call("ping", {}, namespace="/chats", timeout=10))["ok"]
        finally:
            await client.disconnect()


async def test_an_undecodable_packet_closes_the_connection_without_a_traceback(caplog) -> None:
    caplog.set_level(logging.INFO)
    config = config_from_dict({"auth": {"secret": SECRET}})
    async with running_app(config) as (_, url):
        async with websockets.connect(ws_url(url)) as ws:
            opened = await asyncio.wait_for(ws.recv(), 5)
            assert opened.startswith("0{")
            await ws.send("x-not-an-engine-io-packet")
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_a_silent_client_is_dropped_after_ping_interval_and_timeout() -> None:
    config = config_from_dict(
        {"auth": {"secret": SECRET}, "server": {"ping_interval": 1, "ping_timeout": 1}}
    )
    async with running_app(config) as (_, url):
        async with websockets.connect(ws_url(url)) as ws:
            await asyncio.wait_for(ws.recv(), 5)  # the OPEN packet; then never a PONG
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
