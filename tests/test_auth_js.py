"""The official JavaScript socket.io-client (node) against the real server.

A browser app reads a refusal from ``connect_error`` as ``err.message`` and
``err.data``; this checks both exactly as that client hands them over.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import make_token

JS_DIR = Path(__file__).parent / "js"
NO_TOKEN = "-"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
    reason="node and socket.io-client are needed (make js-deps)",
)


def run_js_clients(url: str, runs: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Run connect.js once per (namespace, token), all at once; parse each JSON line."""
    procs = {
        name: subprocess.Popen(
            ["node", "connect.js", url, namespace, token],
            cwd=JS_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, (namespace, token) in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        results[name] = json.loads(out.decode().strip().splitlines()[-1])
    return results


def test_js_client_sees_refusal_codes_and_connects(start_server) -> None:
    server = start_server()
    now = int(time.time())
    results = run_js_clients(
        server.url,
        {
            "missing": ("/chats", NO_TOKEN),
            "garbage": ("/chats", "not-a-token"),
            "expired": ("/", make_token("js-old", exp=now - 60)),
            "good": ("/chats", make_token("js-user")),
        },
    )
    missing = "no token: pass auth {token} or an Authorization header"
    assert results["missing"] == {
        "event": "connect_error",
        "message": missing,
        "data": {"code": "missing_token", "message": missing},
    }
    assert results["garbage"] == {
        "event": "connect_error",
        "message": "malformed token",
        "data": {"code": "invalid_token", "message": "malformed token"},
    }
    assert results["expired"] == {
        "event": "connect_error",
        "message": "token has expired",
        "data": {"code": "token_expired", "message": "token has expired"},
    }
    good = results["good"]
    assert good["event"] == "connect"
    assert good["ack"] == {"ok": True, "data": {"status": "online"}}
