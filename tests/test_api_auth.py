"""Server-to-server HTTP API: API keys, the envelope on every /api/ answer, revocation."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest

from tests.conftest import base_config
from tests.support.clients import eventually, make_token
from tests.support.procs import Proc

KEY_ONE = "api-key-one-0123456789abcdef0123456789"
KEY_FROM_FILE = "api-key-two-from-file-fedcba9876543210"
UNAUTHORIZED = {
    "ok": False,
    "error": {"code": "unauthorized", "message": "missing or wrong API key"},
}


def request(
    server: Proc, path: str, key: str | None = None, method: str = "GET", scheme: str = "Bearer"
) -> tuple[int, Any]:
    """(status, JSON body) of one HTTP request."""
    headers = {"Authorization": f"{scheme} {key}"} if key is not None else {}
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, body.decode(errors="replace")


@pytest.fixture
def keyed_server(start_server, tmp_path) -> Proc:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"\n{KEY_FROM_FILE}\n\n")
    return start_server(base_config(api={"keys": [KEY_ONE], "keys_file": str(keys_file)}))


def test_api_keys(keyed_server: Proc) -> None:
    server = keyed_server
    stats = "/api/v1/presence/stats"
    refused_credentials = [
        (None, "Bearer"),
        ("wrong-key", "Bearer"),
        (KEY_ONE, "Basic"),
        (KEY_ONE[:-1], "Bearer"),
        (KEY_ONE + "x", "Bearer"),
        ("", "Bearer"),
    ]
    for key, scheme in refused_credentials:
        assert request(server, stats, key, scheme=scheme) == (401, UNAUTHORIZED), (key, scheme)
    for key in (KEY_ONE, KEY_FROM_FILE):
        status, body = request(server, stats, key)
        assert status == 200 and body["ok"] is True
        assert set(body["data"]) == {"online_users", "connections", "by_namespace"}
    # Health and readiness are not under /api/: no key needed.
    assert request(server, "/health")[0] == 200
    # Unknown routes and wrong methods: still keyed, still the envelope.
    assert request(server, "/api/v1/no-such-route") == (401, UNAUTHORIZED)
    status, body = request(server, "/api/v1/no-such-route", KEY_ONE)
    assert status == 404 and body["ok"] is False and body["error"]["code"] == "not_found"
    status, body = request(server, stats, KEY_ONE, method="POST")
    assert status == 405 and body["ok"] is False and body["error"]["code"] == "bad_request"
    # A percent-encoded path is not a way around the key.
    assert request(server, "/%61pi/v1/presence/stats")[0] in (401, 404)
    log = server.log()
    assert KEY_ONE not in log and KEY_FROM_FILE not in log
    assert "no [api] keys" not in log


def test_no_keys_dev_mode_is_open_with_a_warning(start_server) -> None:
    server = start_server(base_config())
    status, body = request(server, "/api/v1/presence/stats")
    assert status == 200 and body["ok"] is True
    assert "WARNING" in server.log() and "/api/ is open (dev mode)" in server.log()


def test_no_keys_production_mode_turns_the_api_off(start_server) -> None:
    server = start_server(base_config(server={"mode": "production"}))
    for path in ("/api/v1/presence/stats", "/api/v1/presence/alice"):
        status, body = request(server, path)
        assert status == 404
        assert body == {"ok": False, "error": {"code": "not_found", "message": "not found"}}
    status, _ = request(server, "/api/v1/users/alice/disconnect", method="POST")
    assert status == 404
    assert request(server, "/health")[0] == 200
    assert "/api/ is turned off (404)" in server.log()


async def test_revocation_disconnects_every_connection_of_the_user(keyed_server, clients) -> None:
    server = keyed_server
    alice = make_token("alice")
    first = await clients(server.url, alice, namespaces=["/", "/chats"])
    second = await clients(server.url, alice, namespaces=["/chats"], transports=["polling"])
    bob = await clients(server.url, make_token("bob"), namespaces=["/", "/chats"])

    url = f"{server.url}/api/v1/users/alice/disconnect"
    async with aiohttp.ClientSession() as http:
        async with http.post(url) as resp:  # no key: nothing happens
            assert resp.status == 401
        assert first.sio.connected and second.sio.connected
        auth = {"Authorization": f"Bearer {KEY_ONE}"}
        async with http.post(url, headers=auth) as resp:
            assert resp.status == 200
            assert await resp.json() == {"ok": True, "data": {"connections": 3}}
        await eventually(lambda: not first.sio.connected and not second.sio.connected)
        # Bob is untouched, and alice has nothing left to close.
        assert (await bob.call("ping", {}, namespace="/chats"))["ok"] is True
        async with http.post(url, headers=auth) as resp:
            assert await resp.json() == {"ok": True, "data": {"connections": 0}}
