"""Logs fit for production: no per-connection flood, JSON lines, an access log without
tokens, one start-up summary, --log-level and --version; the real server via its CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import socketio

from sanic_rt import __version__
from sanic_rt.app import create_app
from sanic_rt.server import startup_summary
from sanic_rt.testing import config_from_dict
from tests.conftest import base_config
from tests.support.clients import SECRET, Client, eventually, http, make_token

SUMMARY = "started; mode="


async def test_no_per_connection_lines_by_default_and_one_summary(start_server):
    server = start_server(base_config())
    for n in range(3):
        client = await Client().connect(server.url, make_token(f"u{n}"))
        await client.close()
    assert server.stop() == 0
    log = server.log()
    assert "WebSocket" not in log and "connection open" not in log, log
    assert "sanic_rt.access" not in log
    assert "Build Fast" not in log and "sanic.root" not in log  # no Sanic banner
    (summary,) = [line for line in log.splitlines() if SUMMARY in line]
    for part in (
        f"sanic-rt {__version__} started",
        "mode=dev",
        f"url=http://127.0.0.1:{server.port}",
        "workers=1",
        "backend=memory",
        "cluster=none",
        "chats 0.1.0",
        "metrics=/metrics",
        "admin=off",
        "dashboard=/dashboard",
    ):
        assert part in summary, (part, summary)


async def test_json_lines_and_an_access_log_without_tokens(start_server):
    config = base_config(
        server={"access_log": True, "log_format": "json"}, auth={"allow_query_token": True}
    )
    server = start_server(config)
    token = make_token("quinn")
    client = await Client().connect(f"{server.url}?token={token}", None, auth={})
    await http("GET", f"{server.url}/health?token={token}")
    bad = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(server.url, "not-a-token")
    await client.close()
    await eventually(lambda: '"WS"' in server.log())
    assert server.stop() == 0
    log = server.log()
    assert token not in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "sanic_rt.access"]
    assert {"method": "GET", "path": "/health", "status": 200} in [
        {k: a[k] for k in ("method", "path", "status")} for a in access
    ]
    assert any(a["method"] == "WS" and a["path"] == "/socket.io/" for a in access), access
    refused = [line for line in lines if line.get("code") == "invalid_token"]
    assert refused and refused[0]["namespace"] == "/chats"
    assert sum(SUMMARY in line["message"] for line in lines) == 1


async def test_log_level_flag(start_server):
    server = start_server(base_config(), extra_args=["--log-level", "debug"])
    await eventually(lambda: " DEBUG sanic_rt: effective config (secrets masked)" in server.log())
    assert SECRET not in server.log()
    quiet = start_server(base_config(), extra_args=["--log-level", "WARNING"])
    quiet.stop()
    assert " INFO " not in quiet.log()


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == f"sanic-rt {__version__}"


def test_summary_masks_storage_passwords():
    url = "redis://app:s3cret-pw@redis.internal:6379/0"
    config = config_from_dict(
        base_config(
            presence={"backend": "redis", "redis": {"url": url}}, cluster={"manager": "redis"}
        )
    )
    summary = startup_summary(config, create_app(config))
    assert "s3cret-pw" not in summary
    assert "backend=redis redis://***@redis.internal:6379/0" in summary
    assert "cluster=redis redis://***@redis.internal:6379/0" in summary
