"""Fixtures every test uses: real processes, the real server, real clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from sanic_rt.app import create_app
from sanic_rt.config import load_config
from sanic_rt.server import uvicorn_config
from tests.support.clients import SECRET, Client, eventually
from tests.support.procs import Proc, free_port, memcached_process, redis_process, server_process


def base_config(**sections: Any) -> dict[str, Any]:
    """A dev config with a known secret and short presence timings for tests."""
    config: dict[str, Any] = {
        "server": {"mode": "dev"},
        "auth": {"secret": SECRET},
        "presence": {"ttl": 6, "sweep_interval": 0.2, "offline_grace": 0.5},
    }
    for name, table in sections.items():
        config[name] = {**config.get(name, {}), **table}
    return config


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[Proc]:
    proc = redis_process(tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture
def memcached_proc(tmp_path: Path) -> Iterator[Proc]:
    proc = memcached_process(tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """start_server(config_dict, extra_args=[]) -> a running server Proc (through the CLI)."""
    started: list[Proc] = []

    def start(config: dict[str, Any] | None = None, extra_args: list[str] = (), **kw: Any) -> Proc:
        proc = server_process(tmp_path, config or base_config(), extra_args=list(extra_args), **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    """clients(url, token, namespaces=..., ...) -> a connected Client; all closed afterwards."""
    made: list[Client] = []

    async def connect(url: str, token: str | None, **kwargs: Any) -> Client:
        client = Client()
        made.append(client)
        return await client.connect(url, token, **kwargs)

    yield connect
    for client in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


@contextlib.asynccontextmanager
async def running_app(config_data: dict[str, Any], tmp_path: Path, **app_kwargs: Any):
    """The app served in-process by uvicorn on a free port: (app, url)."""
    config_file = tmp_path / "inprocess.toml"
    from tests.support.procs import write_toml

    port = free_port()
    data = {**config_data, "server": {**config_data.get("server", {}), "port": port}}
    config = load_config(write_toml(config_file, data), env={})
    app = create_app(config, **app_kwargs)
    server = uvicorn.Server(uvicorn_config(config, app.ctx.asgi))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, timeout=10)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[Any]:
    """The in-process app with base_config(): (app, url)."""
    async with running_app(base_config(), tmp_path) as served:
        yield served
