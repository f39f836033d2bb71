"""sanic-rt hosted in an existing Sanic app (examples/hosted/shop.py), served from one process.

Served as a real process both ways a team would: by plain uvicorn, and by
``sanic-rt serve --app``; a real python-socketio client connects while the
shop's own route, middleware, listener and ``app.ctx`` keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sanic import Sanic

from sanic_rt import attach
from sanic_rt.testing import config_from_dict
from tests.conftest import base_config
from tests.support.clients import make_token
from tests.support.procs import HOST, Proc, _http_ok, free_port, write_toml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hosted"

SERVERS = {
    "uvicorn": lambda port: [
        *(sys.executable, "-m", "uvicorn", "shop:app", "--host", HOST, "--port", str(port)),
    ],
    "sanic-rt serve --app": lambda port: [
        *(sys.executable, "-m", "sanic_rt", "serve", "--app", "shop:app", "--port", str(port)),
    ],
}


def base_config_max_request_bytes() -> int:
    return config_from_dict(base_config()).server.max_request_bytes


def example_env(tmp_path: Path) -> dict[str, str]:
    """The process environment: the example on the path, the gateway's config file named."""
    config = write_toml(
        tmp_path / "realtime.toml", base_config(server={"mode": "dev", "host": HOST})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}
    return env | {"PYTHONPATH": str(EXAMPLE), "SHOP_REALTIME_CONFIG": str(config)}


@pytest.fixture(params=list(SERVERS))
def shop_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    argv = SERVERS[request.param](port)
    # Ready once the shop's own listener has filled app.ctx (its route answers).
    ready = lambda: _http_ok(port, "/products/sku-1")  # noqa: E731
    proc = Proc(argv, port, tmp_path, "shop", env=example_env(tmp_path), ready=ready).start()
    yield proc
    proc.stop()


async def get(url: str) -> tuple[int, Any, str | None]:
    """(status, body as JSON if it is JSON, the shop middleware's header)."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
        body = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, body, resp.headers.get("x-served-by")


async def test_the_shop_and_the_gateway_share_one_process(shop_server: Proc, clients: Any) -> None:
    url = shop_server.url
    status, body, served_by = await get(f"{url}/products/sku-1")
    assert status == 200 and served_by == "shop"
    assert body == {"sku": "sku-1", "name": "teapot", "seller": "alice", "seller_online": False}

    alice = await clients(url, make_token("alice"), namespaces=["/chats"])
    assert (await alice.call("ping", {}))["ok"] is True

    # The shop's route sees the gateway's presence, and the gateway's API is there.
    status, body, _ = await get(f"{url}/products/sku-1")
    assert status == 200 and body["seller_online"] is True
    status, body, served_by = await get(f"{url}/api/v1/presence/alice")
    assert status == 200 and body["data"]["online"] is True
    assert served_by == "shop"  # the host's response middleware runs for every route
    # Only /socket.io/ and /api/v1/ are added: the standalone /health is not.
    status, body, _ = await get(f"{url}/health")
    assert status == 404 and "not found" in body.lower()  # the host's own 404 page
    # The gateway's body bound (max_request_bytes) covers /api/, not the host's routes.
    big = b"x" * (2 * base_config_max_request_bytes())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/products/sku-1", data=big) as resp:
            assert resp.status == 405  # the shop's GET-only route answered, not a 413
        async with session.post(f"{url}/api/v1/presence/query", data=big) as resp:
            assert resp.status == 413


def test_serve_app_names_a_wrong_target_in_one_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "sanic_rt", "serve", "--app", "shop:shop_floor"]
    result = subprocess.run(
        argv, env=example_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # (the module's own import logs come before it)
    assert result.stderr.strip().splitlines()[-1] == (
        "config error: --app: shop:shop_floor: expected a Sanic app or the result of "
        "sanic_rt.attach(), got NoneType"
    )


def test_attach_refuses_an_app_whose_ctx_holds_our_names() -> None:
    host = Sanic("host_with_a_payment_gateway")
    host.ctx.gateway = "payments"
    with pytest.raises(ValueError, match=r"app\.ctx\.gateway is already set"):
        attach(host, config_from_dict(base_config()))
    assert host.ctx.gateway == "payments"
    assert not host.router.routes  # nothing was mounted
