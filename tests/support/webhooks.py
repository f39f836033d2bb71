"""A real webhook receiver on a loopback port: checks every signature, collects events."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from tests.support.procs import HOST, free_port

WEBHOOK_SECRET = "webhook-secret-that-is-at-least-32-bytes"
MAX_AGE = 300


def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    """The receiver side of ``Sanic-RT-Signature`` (docs/events.md shows the same)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(now - int(t)) > MAX_AGE:
        return False
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Receiver:
    """Answers ``status`` (200 by default); ``stop()``/``start()`` take it off the port.

    With ``hang`` set, a POST is never answered (until ``stop()``) and its events are
    not kept: the sender's ``timeout`` has to end it. ``hung`` counts such POSTs.
    """

    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/hook"
        self.status = 200
        self.retry_after: str | None = None
        self.events: list[dict[str, Any]] = []  # from 2xx answers only, in arrival order
        self.posts = 0
        self.bad_signatures = 0
        self.hang = False
        self.hung = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts += 1
        header = request.headers.get("Sanic-RT-Signature", "")
        if not verify(self.secret, header, body, time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.hang:
            self.hung += 1
            await self._stopping.wait()  # no answer: the sender times out
            return web.Response(status=503)
        if self.status >= 300:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.status, headers=headers)
        self.events += json.loads(body)["events"]
        return web.Response(status=204)

    async def start(self) -> Receiver:
        self._stopping.clear()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        self._stopping.set()  # hung handlers end, so cleanup does not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def unique(self) -> dict[str, dict[str, Any]]:
        """Events by id (redelivered duplicates collapse)."""
        return {e["id"]: e for e in self.events}

    def by_user(self) -> dict[str, list[dict[str, Any]]]:
        """Each user's distinct events in seq order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for event in sorted(self.unique().values(), key=lambda e: e["seq"]):
            out.setdefault(event["user_id"], []).append(event)
        return out
