"""Graceful shutdown: transports are closed (not namespaces), so clients reconnect by themselves."""

from __future__ import annotations

import signal

from tests.conftest import base_config
from tests.support.clients import eventually, make_token


async def test_sigterm_closes_transports_and_clients_reconnect(start_server, clients):
    server = start_server()
    client = await clients(server.url, make_token("alice"), namespaces=["/chats", "/orders"])
    assert (await client.call("ping", {}))["ok"]
    reasons: list[str] = []
    client.sio.on("disconnect", lambda reason: reasons.append(reason), namespace="/chats")

    server.signal(signal.SIGTERM)
    await eventually(lambda: not server.alive, timeout=15)
    assert server.proc.returncode == 0
    assert "Traceback" not in server.log()
    await eventually(lambda: reasons)
    # A namespace-level disconnect ("server disconnect" without an Engine.IO
    # drop) would stop the client from reconnecting; it must try again.
    replacement = start_server(base_config(), port=server.port)
    await eventually(lambda: client.sio.connected and len(client.sio.namespaces) == 2, timeout=20)
    assert (await client.call("ping", {}, "/orders"))["ok"]
    assert replacement.alive
