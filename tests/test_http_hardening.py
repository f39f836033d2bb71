"""HTTP hardening over the real server: body limits, the open dev API and cross-site
requests, and query tokens in the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token
from tests.support.procs import HOST, Proc, server_process
from tests.support.tokens import token_material

MB = 1_000_000
LIMIT = 1_000_000  # the default of [server] max_request_bytes and max_payload_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One dev server without API keys (the open API), with query tokens allowed."""
    tmp = tmp_path_factory.mktemp("http-hardening")
    config = base_config(
        auth={"allow_query_token": True},
        # The access log on: every handshake is logged, the token must not be.
        server={"cors_allowed_origins": ["https://app.example"], "access_log": True},
    )
    proc = server_process(tmp, config).start()
    yield proc
    proc.stop()


async def raw_exchange(port: int, head: str, body_chunks: Any = ()) -> tuple[int, bytes, bool]:
    """Send a request head and body chunks on one connection; (status, body, closed after)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.encode())
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    _headers, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body, True


def post_head(path: str, port: int, extra: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def too_large(limit: int) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "bad_request", "message": f"request body larger than {limit} bytes"},
    }


async def test_a_10_mb_body_is_refused_from_its_content_length(server: Proc) -> None:
    # Only the head is sent: the answer comes before any of the body is read.
    head = post_head("/api/v1/notifications", server.port, f"Content-Length: {10 * MB}\r\n")
    status, body, _ = await raw_exchange(server.port, head)
    assert status == 413 and json.loads(body) == too_large(LIMIT)


async def test_a_chunked_body_is_refused_once_past_the_limit(server: Proc) -> None:
    chunk = b"x" * 50_000
    # Exactly the limit, then one byte more and no further: bytes the server never
    # reads would turn its close into a reset (RST) instead of an answer.
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (LIMIT // len(chunk)) + [b"1\r\nx\r\n"]
    head = post_head("/api/v1/notifications", server.port, "Transfer-Encoding: chunked\r\n")
    status, body, _ = await raw_exchange(server.port, head, framed)
    assert status == 413 and json.loads(body) == too_large(LIMIT)
    # A chunked body within the limit reaches the route whole.
    payload = json.dumps({"user_ids": ["alice"], "type": "t", "title": "t", "pad": "y" * 900_000})
    within = [b"%x\r\n%s\r\n" % (len(payload), payload.encode()), b"0\r\n\r\n"]
    head = head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    status, body, _ = await raw_exchange(server.port, head, within)
    assert status == 200 and b'"users":1' in body, body


async def test_an_oversized_polling_post_is_answered_413_and_ends_the_session(
    server: Proc,
) -> None:
    client = Client()
    await client.connect(server.url, make_token("poller"), transports=["polling"])
    try:
        sid = client.sio.eio.sid
        path = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        head = post_head(path, server.port, f"Content-Length: {2 * MB}\r\n").replace(
            "application/json", "text/plain;charset=UTF-8"
        )
        status, body, _ = await asyncio.wait_for(raw_exchange(server.port, head), 5)
        assert status == 413 and json.loads(body) == too_large(LIMIT)
        # The Engine.IO session is gone: the client sees its connection end.
        await eventually(lambda: not client.sio.connected, timeout=10)
        status, _ = await http("GET", f"{server.url}{path}")
        assert status == 400
    finally:
        await client.close()


# --- the open (keyless) dev API and other sites ---------------------------------------


async def test_the_open_api_refuses_other_origins_and_non_json_posts(server: Proc) -> None:
    url = f"{server.url}/api/v1/notifications"
    good = json.dumps({"user_ids": ["nobody"], "type": "t", "title": "hi"}).encode()
    evil = {"Origin": "https://evil.example"}
    # The finding: a text/plain POST from another site's page (no CORS preflight).
    status, body = await http("POST", url, raw=good, headers={**evil, "Content-Type": "text/plain"})
    assert status == 403 and body["error"] == {"code": "forbidden", "message": "origin not allowed"}
    status, body = await http("POST", url, raw=good, headers=evil)
    assert status == 403
    status, body = await http("GET", f"{server.url}/api/v1/presence/stats", headers=evil)
    assert status == 403
    # A non-JSON POST without an Origin (a form, a script) is refused too.
    status, body = await http("POST", url, raw=good, headers={"Content-Type": "text/plain"})
    assert status == 415, body
    assert body["error"]["message"] == "Content-Type must be application/json"
    # A POST with no body (a script's) needs no type.
    status, body = await http("POST", f"{server.url}/api/v1/users/nobody/disconnect")
    assert status == 200 and body["data"] == {"connections": 0}, body
    # Allowed: no Origin (server to server), the server's own origin, a listed origin.
    for headers in ({}, {"Origin": server.url}, {"Origin": "https://app.example"}):
        status, body = await http("POST", url, raw=good, headers=headers)
        assert status == 200 and body["data"] == {"users": 1, "connected": 0}, (headers, body)


# --- query tokens and the log ------------------------------------------------------------


async def namespace_connect_over_websocket(server: Proc, query: str) -> dict[str, Any]:
    """A raw Engine.IO websocket with ``query`` sent as typed (python-socketio's client
    re-encodes the URL); the Socket.IO answer to connecting to "/" without auth."""
    uri = f"ws://{HOST}:{server.port}/socket.io/?EIO=4&transport=websocket&{query}"
    async with websockets.connect(uri) as ws:
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")  # Engine.IO open
        await ws.send("40")
        answer = await asyncio.wait_for(ws.recv(), 5)
    kind, payload = answer[:2], json.loads(answer[2:])
    return {"accepted": kind == "40", "payload": payload}


async def test_a_percent_encoded_query_token_name_is_not_a_token_nor_logged(server: Proc) -> None:
    spelled, literal = make_token("spelled"), make_token("literal")
    got = await namespace_connect_over_websocket(server, f"%74oken={spelled}")
    assert not got["accepted"] and got["payload"]["data"]["code"] == "missing_token", got
    # The literal name still works, and neither value reaches the log.
    got = await namespace_connect_over_websocket(server, f"token={literal}")
    assert got["accepted"], got
    # Both handshakes are in the access log by now (the second was accepted).
    await eventually(lambda: server.log().count("/socket.io/") >= 2, timeout=5)
    log = server.log()
    for token in (spelled, literal):
        for piece in token_material(token):
            assert piece not in log, f"token material {piece!r} in the server log"
