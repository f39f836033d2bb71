"""Reach the gateway's users from code that is not the gateway (a web app, a worker).

::

    from sanic_rt.emitter import Emitter

    emitter = Emitter.from_config("sanic-rt.toml")
    emitter.emit_to_users(["alice"], "/notifications", "notification", {"title": "Hi"})
    emitter.presence.is_online("alice")

Emits go through python-socketio's write-only Redis manager on the gateway's
``[cluster]`` channel, to the same per-user rooms the gateway uses; presence
is read from the configured backend with the gateway's own backend code.
:class:`AsyncEmitter` is the asyncio variant. Both need a shared backend
(``redis`` or ``memcached``) and ``[cluster] manager = "redis"``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import socketio

from .backend import PresenceBackend
from .config import Config, ConfigError, PluginsConfig, load_config
from .gateway import user_room
from .plugin_manager import PluginHost
from .presence_model import PresenceRecord

__all__ = ["AsyncEmitter", "Emitter"]
T = TypeVar("T")


def _checked(config: Config) -> Config:
    if config.cluster.manager != "redis":
        raise ConfigError(
            config.source,
            "cluster.manager",
            'the emitter reaches the gateway through the message bus: set manager = "redis"',
        )
    return config


def _backend(config: Config) -> PresenceBackend:
    """The configured backend, built like the app builds it (no plugins but backends)."""
    host = PluginHost(config.replace(plugins=PluginsConfig(enabled=[], settings={})))
    host.load()
    name = config.presence.backend
    factories = host.backends()
    if name not in factories:
        raise ConfigError(config.source, "presence.backend", f"unknown backend {name!r}")
    backend = factories[name](config, config.presence)  # [presence] is the Timings
    if not backend.shared:
        raise ConfigError(
            config.source,
            "presence.backend",
            f"{name!r} lives in the gateway's process: the emitter needs redis or memcached",
        )
    return backend


def _manager_url(config: Config) -> str:
    return config.cluster.url or config.presence.redis.url


def _load(path: str | os.PathLike[str]) -> Config:
    return _checked(load_config(path))


class AsyncPresenceReader:
    """Presence reads from the shared backend: what the gateway's HTTP API answers."""

    def __init__(self, backend: PresenceBackend) -> None:
        self.backend = backend

    async def get(self, user_id: str) -> PresenceRecord:
        """The user's record (``.as_dict()`` is the HTTP API's ``data``)."""
        return (await self.get_many([user_id]))[user_id]

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, PresenceRecord]:
        """Records by user id; unknown users come back offline."""
        return await self.backend.get_many(list(dict.fromkeys(user_ids)), time.time())

    async def is_online(self, user_id: str) -> bool:
        return (await self.get(user_id)).online

    async def online_count(self) -> int:
        """Users online (invisible ones included)."""
        return await self.backend.online_count()


class AsyncEmitter:
    """The asyncio emitter; build it with :meth:`from_config` and ``await close()`` it."""

    def __init__(self, config: Config) -> None:
        self.config = _checked(config)
        self.backend = _backend(config)
        self.presence = AsyncPresenceReader(self.backend)
        self.manager = socketio.AsyncRedisManager(
            _manager_url(config), channel=config.cluster.channel, write_only=True
        )
        self._started = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> AsyncEmitter:
        """From the gateway's TOML file (environment overrides apply as for the gateway)."""
        return cls(_load(path))

    async def emit_to_users(
        self, user_ids: Iterable[str], namespace: str, event: str, data: Any
    ) -> None:
        """Send ``event`` to every connection of these users on ``namespace``, on any node."""
        rooms = [user_room(u) for u in dict.fromkeys(user_ids)]
        if rooms:
            await self._start()
            await self.manager.emit(event, data, namespace=namespace, room=rooms)

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()
        redis = getattr(self.manager, "redis", None)
        if redis is not None:
            await redis.aclose()


class Emitter:
    """The blocking emitter, for WSGI apps, Celery tasks and scripts. Thread-safe.

    Emits go through python-socketio's ``RedisManager``; presence reads run the
    async backend on a private event loop in a daemon thread.
    """

    def __init__(self, config: Config) -> None:
        self.config = _checked(config)
        self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._loop.run_forever, name="sanic-rt-emitter")
        thread.daemon = True  # a forgotten close() must not keep the process alive
        thread.start()
        self._async = self._run(self._make_async(config))
        self.presence = PresenceReader(self)
        self.manager = socketio.RedisManager(
            _manager_url(config), channel=config.cluster.channel, write_only=True
        )

    @staticmethod
    async def _make_async(config: Config) -> AsyncPresenceReader:
        backend = _backend(config)
        await backend.start()
        return AsyncPresenceReader(backend)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> Emitter:
        """From the gateway's TOML file (environment overrides apply as for the gateway)."""
        return cls(_load(path))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def emit_to_users(self, user_ids: Iterable[str], namespace: str, event: str, data: Any) -> None:
        """Send ``event`` to every connection of these users on ``namespace``, on any node."""
        rooms = [user_room(u) for u in dict.fromkeys(user_ids)]
        if rooms:
            self.manager.emit(event, data, namespace=namespace, room=rooms)

    def close(self) -> None:
        self._run(self._async.backend.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        redis = getattr(self.manager, "redis", None)
        if redis is not None:
            redis.close()


@dataclasses.dataclass
class PresenceReader:
    """The blocking twin of :class:`AsyncPresenceReader`."""

    emitter: Emitter

    def get(self, user_id: str) -> PresenceRecord:
        return self.emitter._run(self.emitter._async.get(user_id))

    def get_many(self, user_ids: Sequence[str]) -> dict[str, PresenceRecord]:
        return self.emitter._run(self.emitter._async.get_many(user_ids))

    def is_online(self, user_id: str) -> bool:
        return self.emitter._run(self.emitter._async.is_online(user_id))

    def online_count(self) -> int:
        return self.emitter._run(self.emitter._async.online_count())
