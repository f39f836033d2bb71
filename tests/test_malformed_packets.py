"""A malformed Socket.IO packet gets an error ack, never a traceback or a lost connection.

Over the real server through its CLI, a raw websocket speaking Engine.IO 4 /
Socket.IO 5 by hand: python-socketio's own client cannot send these.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import base_config
from tests.support.clients import make_token, recv_packet, ws_url
from tests.support.procs import Proc, server_process


def ack_of(frame: str, ack_id: int) -> object:
    prefix = f"43/chats,{ack_id}"
    assert frame.startswith(prefix), frame
    return json.loads(frame[len(prefix) :])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = server_process(tmp_path_factory.mktemp("malformed"), base_config()).start()
    yield proc
    proc.stop()


BAD_PACKETS = [
    # (what, the EVENT packet after '42/chats,<id>')
    ("payload not JSON", "{]"),
    ("integer past the decoder's digit limit", '["ping",{"x":' + "1" * 5000 + "}]"),
    ("nesting past the decoder's depth", "[" * 5000),
    ("event name not a string", "[123,{}]"),
    ("event name a list", "[[1],{}]"),
    ("payload an object, not a list", '{"event":"ping"}'),
    ("payload an empty list", "[]"),
    ("payload a string", '"ping"'),
]


@pytest.mark.parametrize(("what", "payload"), BAD_PACKETS, ids=[b[0] for b in BAD_PACKETS])
async def test_a_malformed_event_gets_bad_request_and_the_connection_goes_on(
    server, what: str, payload: str
) -> None:
    async with websockets.connect(ws_url(server.url), max_size=None) as ws:
        assert (await recv_packet(ws)).startswith("0")  # Engine.IO OPEN
        await ws.send("40/chats," + json.dumps({"token": make_token("mallory")}))
        assert (await recv_packet(ws)).startswith("40/chats,")
        await ws.send(f"42/chats,7{payload}")
        [reply] = ack_of(await recv_packet(ws), 7)  # type: ignore[misc]
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", (what, reply)
        # the same connection still answers
        await ws.send('42/chats,8["ping",{}]')
        [pong] = ack_of(await recv_packet(ws), 8)  # type: ignore[misc]
        assert pong["ok"] is True, pong
    assert "Traceback" not in server.log(), server.log()[-3000:]


async def test_a_malformed_event_without_an_ack_id_is_dropped_quietly(server) -> None:
    async with websockets.connect(ws_url(server.url)) as ws:
        assert (await recv_packet(ws)).startswith("0")
        await ws.send("40/chats," + json.dumps({"token": make_token("mallory")}))
        assert (await recv_packet(ws)).startswith("40/chats,")
        for payload in ("{]", "[123]", "{}", "[]"):
            await ws.send(f"42/chats,{payload}")
        for unknown_type in ("4", "7", "8", "9", "x"):  # CONNECT_ERROR is the server's
            await ws.send(f"4{unknown_type}/chats,[]")
        await ws.send('42/chats,9["ping",{}]')
        [pong] = ack_of(await recv_packet(ws), 9)  # type: ignore[misc]
        assert pong["ok"] is True, pong  # nothing else was answered before it
    assert "Traceback" not in server.log(), server.log()[-3000:]
