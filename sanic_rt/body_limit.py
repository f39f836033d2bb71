"""ASGI middleware bounding HTTP request bodies.

Sanic's ``REQUEST_MAX_SIZE`` has no effect under ASGI (a 10 MB body was
accepted and pushed; 200 MB grew the process by ~400 MB), and python-engineio
never answers an oversized long-polling POST. Here a body is refused with 413
and the connection closed: from ``Content-Length`` before any of it is read,
and for a chunked body (no length) once the bytes received pass the limit. A
chunked body within the limit is read here and handed on whole, so nothing is
ever buffered past the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from .envelope import error

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: called with the scope of a refused request (e.g. to close its Engine.IO session)
OnRefused = Callable[[Scope], Awaitable[None]]


def limit_body_size(
    app: ASGIApp, limit_for: Callable[[Scope], int], on_refused: OnRefused | None = None
) -> ASGIApp:
    """Wrap ``app``: an HTTP body over ``limit_for(scope)`` bytes gets 413 and a close."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        limit = limit_for(scope)
        length, chunked = _declared_body(scope)
        if length is not None and length > limit:
            return await _refuse(scope, send, limit, on_refused)
        if not chunked:
            # The HTTP parser never passes on more than Content-Length bytes.
            return await app(scope, receive, send)
        body = await _read_at_most(receive, limit)
        if body is None:
            return await _refuse(scope, send, limit, on_refused)
        await app(scope, _replay(body, receive), send)

    return guarded


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked)."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # the HTTP parser has refused it already
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client left; the app sees the disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # http.disconnect, when the client goes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(scope: Scope, send: Send, limit: int, on_refused: OnRefused | None) -> None:
    body = json.dumps(error("bad_request", f"request body larger than {limit} bytes")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: this connection is done.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    if on_refused is not None:
        await on_refused(scope)
