"""The backend conformance suite runs every test against every backend.

Each backend is built the way the app builds it: through the plugin
registry from config. Networked backends talk to a real redis-server or
memcached started once per module; each test gets its own key prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sanic_rt.backend import PresenceBackend
from sanic_rt.config import load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence_model import Timings
from tests.support.procs import Proc, memcached_process, redis_process
from tests.support.topologies import ClusterSetup, SentinelSetup

BACKENDS = ["memory", "redis", "memcached", "redis-sentinel", "redis-cluster"]
#: the Redis topologies the redis backend runs on besides a single server
TOPOLOGIES = {"redis-sentinel": SentinelSetup, "redis-cluster": ClusterSetup}
TIMINGS = Timings(ttl=10.0, offline_grace=5.0, idle_timeout=100.0)
_prefixes = itertools.count(1)


@pytest.fixture(scope="module")
def storage_procs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    started: dict[str, Any] = {}

    def get(kind: str) -> Proc | SentinelSetup | ClusterSetup:
        if kind not in started:
            tmp: Path = tmp_path_factory.mktemp(kind)
            make = TOPOLOGIES.get(kind) or (redis_process if kind == "redis" else memcached_process)
            started[kind] = make(tmp).start()
        return started[kind]

    yield get
    for proc in started.values():
        proc.stop()


def backend_settings(name: str, storage_procs: Any) -> dict[str, Any]:
    prefix = f"t{next(_prefixes)}"
    if name == "redis":
        port = storage_procs("redis").port
        return {"redis": {"url": f"redis://127.0.0.1:{port}/0", "key_prefix": prefix}}
    if name in TOPOLOGIES:
        url = storage_procs(name).url()
        return {"redis": {"url": url, "key_prefix": prefix}}
    if name == "memcached":
        port = storage_procs("memcached").port
        # 40 concurrent writers of one user from 3 nodes (the race tests): on a loaded
        # machine 16 cas retries can run out; the tests are about the outcome.
        memcached = {"servers": [f"127.0.0.1:{port}"], "key_prefix": prefix}
        return {"memcached": memcached | {"max_cas_retries": 64}}
    return {}


@pytest.fixture(params=BACKENDS)
async def make_backends(request: pytest.FixtureRequest, storage_procs: Any) -> AsyncIterator[Any]:
    """make_backends(n, timings) -> n backend instances sharing one storage.

    For the memory backend (one process only) all n are the same instance.
    """
    settings = backend_settings(request.param, storage_procs)
    name = "redis" if request.param in TOPOLOGIES else request.param
    made: list[PresenceBackend] = []

    async def make(n: int = 1, timings: Timings = TIMINGS) -> list[PresenceBackend]:
        config = load_config(
            env={},
            overrides={"presence.backend": name}
            | {
                f"presence.{section}.{k}": v
                for section, table in settings.items()
                for k, v in table.items()
            },
        )
        host = PluginHost(config)
        host.load()
        factory: Callable[..., PresenceBackend] = host.backends()[name]
        first = factory(config, timings)
        await first.start()
        made.append(first)
        out = [first]
        for _ in range(n - 1):
            if not first.shared:
                out.append(first)
                continue
            other = factory(config, timings)
            await other.start()
            made.append(other)
            out.append(other)
        return out

    yield make
    for backend in made:
        await backend.close()
