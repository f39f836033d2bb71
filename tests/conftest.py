"""Fixtures every test uses: real processes, the real server, real clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sanic_rt.testing import config_from_dict, running_app
from tests.support.clients import SECRET, Client
from tests.support.procs import Proc, memcached_process, redis_process, server_process


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


@pytest.fixture
async def app_server() -> AsyncIterator[Any]:
    """The in-process app with base_config(): (app, url)."""
    async with running_app(config_from_dict(base_config())) as served:
        yield served
