"""Helpers for tests over several server processes and their presence updates."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import base_config
from tests.support.clients import eventually, http, make_token
from tests.support.procs import Proc, write_toml

_ids = itertools.count(1)
TTL = 6.0  # >= 6 s: a loaded 2-core machine must not expire live connections
SWEEP = 0.2


def cluster_config(redis: Proc, **sections: Any) -> dict[str, Any]:
    """base_config() with presence in Redis and the Redis manager between nodes."""
    url = f"redis://127.0.0.1:{redis.port}/0"
    presence = {"ttl": TTL, "sweep_interval": SWEEP, "backend": "redis", "redis": {"url": url}}
    return base_config(
        presence=presence | sections.pop("presence", {}),
        cluster={"manager": "redis"},
        **sections,
    )


def updates_for(client: Any, user_id: str, namespace: str = "/chats") -> list[dict]:
    """The presence:update payloads ``client`` received about ``user_id``."""
    return [u for u in client.events("presence:update", namespace) if u["user_id"] == user_id]


async def hears(clients: Any, listener: Proc, speaker: Proc) -> None:
    """Wait until ``listener`` receives presence changes made on ``speaker``.

    A node subscribes to the manager's channel in the background at start-up;
    until then, emits from other nodes miss it. Probe until one arrives.
    """
    probe = await clients(listener.url, make_token(f"listener-{next(_ids)}"))

    async def heard() -> bool:
        user_id = f"probe-{next(_ids)}"
        await probe.call("presence:subscribe", {"user_ids": [user_id]})
        speaking = await clients(speaker.url, make_token(user_id))
        try:
            await eventually(lambda: updates_for(probe, user_id), timeout=1)
        except AssertionError:
            return False
        finally:
            await speaking.close()
        return True

    await eventually(heard, timeout=20)


async def wire_up(clients: Any, listeners: list[Proc], speakers: list[Proc]) -> None:
    """Wait until every listener node hears every speaker node."""
    for listener in listeners:
        for speaker in speakers:
            await hears(clients, listener, speaker)


async def record_of(node: Proc, user_id: str) -> dict:
    """The HTTP API's presence record of ``user_id`` on ``node``."""
    status, body = await http("GET", f"{node.url}/api/v1/presence/{user_id}")
    assert status == 200, body
    return body["data"]


async def record_after_outage(node: Proc, user_id: str) -> dict | None:
    """``record_of``, or None while the node still answers 503 after a Redis outage.

    A pooled connection that predates the outage fails its first call after it
    (``unavailable``, then it reconnects): for a poll that is "not yet".
    """
    status, body = await http("GET", f"{node.url}/api/v1/presence/{user_id}")
    if status == 503:
        return None
    assert status == 200, body
    return body["data"]


async def sentinel(clients: Any, node: Proc, watcher: Any, namespace: str = "/chats") -> None:
    """A later change made on ``node``; once it reached ``watcher``, every earlier one did."""
    user_id = f"sentinel-{next(_ids)}"
    await watcher.call("presence:subscribe", {"user_ids": [user_id]}, namespace)
    await clients(node.url, make_token(user_id), namespaces=[namespace])
    await eventually(lambda: updates_for(watcher, user_id, namespace))


def check_config(tmp_path: Path, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``sanic-rt check-config`` on ``data`` written as TOML."""
    path = write_toml(tmp_path / "check.toml", data)
    return subprocess.run(
        [sys.executable, "-m", "sanic_rt", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
