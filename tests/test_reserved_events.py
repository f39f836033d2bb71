"""A client cannot send the events the server itself raises: ``connect``, ``disconnect``.

python-socketio hands a client EVENT named ``disconnect`` to the same
``_trigger_event`` it calls when a connection ends
(socketio/async_server.py: ``_handle_event_internal`` passes ``data[0]`` as
the event name), and our base namespace (sanic_rt/namespace.py
``trigger_event``) takes it for a real disconnect: the connection's state,
presence and per-user count were dropped while the socket stayed connected and
in its user's room. Repeated, one JWT held any number of connections past
``[auth] max_connections_per_user``. An EVENT named ``connect`` re-ran the
admission with an environ and auth the client wrote.

Over the real server through its CLI, with a raw websocket speaking Engine.IO 4 /
Socket.IO 5 by hand (python-socketio's client refuses to emit these names).
"""

from __future__ import annotations

import json

import pytest
import websockets

from tests.conftest import base_config
from tests.support.clients import http, make_token, recv_packet, ws_url

API_KEY = "k" * 32


async def connect_chats(url: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(ws_url(url))
    assert (await ws.recv()).startswith("0")  # OPEN
    await ws.send("40/chats," + json.dumps({"token": token}))
    answer = await recv_packet(ws)
    if not answer.startswith("40/chats,"):
        await ws.close()
        raise ConnectionRefusedError(answer)
    return ws


async def connections(url: str) -> int:
    status, body = await http("GET", url + "/api/v1/presence/stats", api_key=API_KEY)
    assert status == 200, body
    return int(body["data"]["connections"])


@pytest.mark.parametrize("name", ["disconnect", "connect"])
async def test_a_client_event_named_as_a_lifecycle_event_changes_nothing(start_server, name):
    server = start_server(
        base_config(auth={"max_connections_per_user": 1}, api={"keys": [API_KEY]})
    )
    token = make_token("mallory")
    ws = await connect_chats(server.url, token)
    try:
        assert await connections(server.url) == 1
        payload = [name, {"HTTP_AUTHORIZATION": "Bearer " + token}, {"token": token}]
        await ws.send("42/chats,7" + json.dumps(payload))
        answer = await recv_packet(ws)
        assert answer.startswith("43/chats,7"), answer
        assert json.loads(answer[len("43/chats,7") :])[0]["ok"] is False, answer
        # the connection is still there, counted once, and the cap still holds
        assert await connections(server.url) == 1
        await ws.send('42/chats,8["ping",{}]')
        answer = await recv_packet(ws)
        assert json.loads(answer[len("43/chats,8") :])[0]["ok"] is True, answer
        with pytest.raises(ConnectionRefusedError, match="too_many_connections"):
            second = await connect_chats(server.url, token)
            await second.close()
    finally:
        await ws.close()
