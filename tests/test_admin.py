"""The Socket.IO Admin UI: python-socketio's instrument() on /admin, the vendored UI
at /admin-ui/, checked with the python-socketio client against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import socketio
import websockets

from sanic_rt.operations import LOGGED_NAME_CHARS, MAX_ADMIN_LOGIN_FAILURES, logged_name
from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token
from tests.support.procs import Proc, server_process, write_toml

PASSWORD = "correct-horse-battery"
ADMIN = {"username": "ops", "password": PASSWORD}


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("admin")
    config = base_config(admin={"enabled": True, "username": "ops", "password": PASSWORD})
    proc = server_process(tmp, config).start()
    yield proc
    proc.stop()


async def test_admin_ui_sees_connections_read_only(admin_server, clients):
    user = await clients(admin_server.url, make_token("ada"))
    admin = await clients(admin_server.url, None, namespaces=["/admin"], auth=ADMIN)
    config = await eventually(lambda: admin.events("config", "/admin"))
    # read_only (the default): no emit, join, leave or disconnect from the UI.
    assert config[0]["supportedFeatures"] == ["AGGREGATED_EVENTS", "ALL_EVENTS"]
    sockets = await eventually(lambda: admin.events("all_sockets", "/admin"))
    assert any(s["nsp"] == "/chats" for s in sockets[0])
    await eventually(lambda: admin.events("server_stats", "/admin"))
    assert (await user.call("ping", {}))["ok"]


async def test_wrong_admin_password_is_refused_and_logged_without_it(admin_server):
    for auth in ({"username": "ops", "password": "guess-1234567"}, {"username": "x"}, None):
        client = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(admin_server.url, None, namespaces=["/admin"], auth=auth or {})
        await client.close()
    # Logged at most once per 10 s (a rate-limited warning), so at least once.
    assert await eventually(lambda: "refused an Admin UI login" in admin_server.log())
    assert "guess-1234567" not in admin_server.log() and PASSWORD not in admin_server.log()


async def test_guessing_admin_passwords_closes_the_session_and_logs_little(admin_server):
    name = "n" * 100_000
    uri = f"ws://127.0.0.1:{admin_server.port}/socket.io/?EIO=4&transport=websocket"
    refused = 0
    async with websockets.connect(uri, max_size=None) as ws:
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")  # Engine.IO open
        with contextlib.suppress(websockets.ConnectionClosed):
            for attempt in range(20):
                login = {"username": name, "password": f"guess-{attempt}"}
                await ws.send("40/admin," + json.dumps(login))
                answer = await asyncio.wait_for(ws.recv(), 5)
                while not answer.startswith(("40", "44")):  # pings, events to /admin
                    answer = await asyncio.wait_for(ws.recv(), 5)
                assert answer.startswith("44/admin,"), answer[:80]  # CONNECT_ERROR
                refused += 1
    assert refused == MAX_ADMIN_LOGIN_FAILURES
    await eventually(lambda: "closed an Engine.IO session after" in admin_server.log())
    log = admin_server.log()
    assert log.count("refused an Admin UI login") <= 2, "one warning per refused login"
    assert "n" * (LOGGED_NAME_CHARS + 1) not in log


def test_a_logged_name_is_short_and_quoted():
    assert logged_name("ops") == "'ops'"
    assert logged_name("x" * 1000) == repr("x" * LOGGED_NAME_CHARS) + "..."
    assert logged_name("evil\nname") == "'evil\\nname'"


async def test_admin_ui_files_are_served_locally(admin_server):
    status, page = await http("GET", f"{admin_server.url}/admin-ui/")
    assert status == 200 and "Socket.IO Admin UI" in page
    script = page.split('<script src="')[-1].split('"')[0]
    status, body = await http("GET", f"{admin_server.url}/admin-ui/{script}")
    assert status == 200 and len(body) > 10_000


async def test_admin_namespace_does_not_exist_when_disabled(start_server):
    server = start_server(base_config())
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, None, namespaces=["/admin"], auth=ADMIN)
    await client.close()
    status, _ = await http("GET", f"{server.url}/admin-ui/")
    assert status == 404


@pytest.mark.parametrize(
    ("admin", "key"),
    [
        ({"password": "short-pw"}, "admin.password"),
        ({}, "admin.password"),
        ({"password_file": "/nonexistent/admin-pw"}, "admin.password_file"),
    ],
)
def test_production_admin_needs_a_long_password(tmp_path, admin, key):
    config = base_config(
        server={"mode": "production"}, admin={"enabled": True, **admin}, api={"keys": ["k" * 32]}
    )
    path = write_toml(tmp_path / "prod.toml", config)
    result = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "short-pw" not in result.stderr
