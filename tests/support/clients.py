"""Real python-socketio clients and tokens for tests."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import jwt
import socketio

SECRET = "test-secret-that-is-at-least-32-bytes-long"


def make_token(user_id: str | None, ttl: float = 600, secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + int(ttl), **claims}
    if user_id is not None:
        payload["sub"] = user_id
    return jwt.encode(payload, secret, algorithm="HS256")


#: a websocket handshake whose Authorization header is past uvicorn's/websockets' limit
OVERSIZED_HEADER_HANDSHAKE = (
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: localhost\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    f"Authorization: Bearer {'a' * 9000}\r\n\r\n"
).encode()


def ws_url(url: str) -> str:
    """The raw Engine.IO 4 websocket URL of the server at ``url`` (``http://host:port``)."""
    return url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


async def recv_packet(ws: Any) -> str:
    """The next Socket.IO packet on a raw websocket, answering Engine.IO PINGs on the way."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(frame, str)
        if frame == "2":
            await ws.send("3")
            continue
        return frame


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Client:
    """An AsyncClient that records every event it receives, per namespace."""

    def __init__(self, **client_kwargs: Any) -> None:
        self.sio = socketio.AsyncClient(**client_kwargs)
        self.received: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self.refusals: list[Any] = []

    def _record(self, namespace: str) -> None:
        async def on_any(event: str, *args: Any) -> None:
            self.received[(namespace, event)].append(args[0] if len(args) == 1 else args)

        async def on_connect_error(data: Any) -> None:
            self.refusals.append(data)

        self.sio.on("*", on_any, namespace=namespace)
        self.sio.on("connect_error", on_connect_error, namespace=namespace)

    async def connect(
        self,
        url: str,
        token: str | None,
        namespaces: Iterable[str] = ("/chats",),
        transports: list[str] | None = None,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        wait_timeout: float = 10,
    ) -> Client:
        namespaces = list(namespaces)
        for ns in namespaces:
            self._record(ns)
        if auth is None:
            auth = {"token": token} if token is not None else {}
        await self.sio.connect(
            url,
            namespaces=namespaces,
            auth=auth,
            transports=transports or ["websocket"],
            headers=headers or {},
            wait_timeout=wait_timeout,
        )
        return self

    async def call(
        self, event: str, data: Any = None, namespace: str = "/chats", timeout: float = 10
    ):
        return await self.sio.call(event, data, namespace=namespace, timeout=timeout)

    def events(self, event: str, namespace: str = "/chats") -> list[Any]:
        return self.received[(namespace, event)]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


async def http(
    method: str,
    url: str,
    body: Any = None,
    api_key: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request with aiohttp (never blocks the test's event loop): (status, JSON)."""
    import aiohttp

    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
            headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, url, **kwargs) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            return resp.status, data
