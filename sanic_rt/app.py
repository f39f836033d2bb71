"""The app factory: a Sanic app with the Socket.IO server, presence and plugins on ``app.ctx``.

The Sanic app is served as ASGI (``app.ctx.asgi``: python-socketio's ASGIApp
in front of Sanic, under uvicorn); see docs/development/SERVING_MODE.md.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import socketio
from sanic import Sanic

from . import http_api, operations, wire_json
from .auth import TokenVerifier, has_explicit_key, hmac_secret, install_log_redaction
from .body_limit import limit_body_size
from .config import Config, ConfigError, ServerConfig, load_config
from .events import PresenceEvents
from .gateway import Gateway
from .logs import quiet_socketio_logs
from .managers import RedisManager, close_manager
from .namespace import BaseNamespace
from .plugin_manager import PluginHost
from .presence import Presence
from .recovery import MemoryEventLog, MemoryLogManager, Recovery, SessionLimits
from .redis_connect import parse_redis_url
from .room_index import indexed_manager
from .sio_server import GatewayPacket, GatewayServer
from .stream_manager import StreamManager
from .targeted_bus import TargetedStreamManager

log = logging.getLogger("sanic_rt")
_app_numbers = itertools.count(1)
MIN_HMAC_SECRET_BYTES = 32
ALLOWED_TRANSPORTS = {"polling", "websocket"}


def check_deployment(config: Config, backend_shared: bool) -> None:
    """Cross-key checks that TOML types cannot express; raise :class:`ConfigError`."""
    src, server, auth = config.source, config.server, config.auth
    if not server.transports or set(server.transports) - ALLOWED_TRANSPORTS:
        raise ConfigError(
            src, "server.transports", 'expected a non-empty subset of "polling", "websocket"'
        )
    if any(a.lower() == "none" for a in auth.algorithms) or not auth.algorithms:
        raise ConfigError(src, "auth.algorithms", 'a non-empty list without "none"')
    if config.cluster.manager == "memcached":
        raise ConfigError(
            src, "cluster.manager", 'memcached has no pub/sub; use "redis" as the message bus'
        )
    if config.cluster.manager in ("redis", "redis-streams"):
        check_bus_url(config)
    if not backend_shared and (server.workers > 1 or config.cluster.manager):
        raise ConfigError(
            src,
            "presence.backend",
            f"{config.presence.backend!r} is one process only: use redis or memcached "
            "with several workers or a cluster manager",
        )
    if config.recovery.enabled and config.cluster.manager == "redis":
        raise ConfigError(
            src,
            "recovery.enabled",
            'pub/sub cannot replay missed events: use manager = "redis-streams"',
        )
    if config.cluster.routing == "targeted":
        if config.cluster.manager != "redis-streams":
            raise ConfigError(src, "cluster.routing", 'targeted needs manager = "redis-streams"')
        if config.recovery.enabled:
            raise ConfigError(
                src, "recovery.enabled", 'not available with routing = "targeted" (yet)'
            )
    if server.workers > 1:
        if not config.cluster.manager:
            raise ConfigError(
                src, "cluster.manager", 'workers > 1 needs manager = "redis" or "redis-streams"'
            )
        if server.transports != ["websocket"]:
            raise ConfigError(
                src,
                "server.transports",
                'workers > 1 needs transports = ["websocket"] '
                "(one long-polling session cannot be pinned to one worker)",
            )
    if config.production:
        if not has_explicit_key(auth):
            raise ConfigError(src, "auth.secret", "production mode needs an explicit key")
        secret = hmac_secret(config)
        uses_hmac = any(a.startswith("HS") for a in auth.algorithms)
        # An empty secret_file counts as too short, not as no HS* key.
        has_secret = bool(auth.secret or auth.secret_file)
        if uses_hmac and has_secret and len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ConfigError(
                src,
                "auth.secret",
                f"production needs an HS* secret of >= {MIN_HMAC_SECRET_BYTES} bytes",
            )
        if "*" in server.cors_allowed_origins:
            raise ConfigError(src, "server.cors_allowed_origins", 'production refuses "*"')


def check_bus_url(config: Config) -> None:
    """The pub/sub bus's Redis URL must name one server or a Sentinel master."""
    key = "cluster.url" if config.cluster.url else "presence.redis.url"
    try:
        target = parse_redis_url(config.cluster.url or config.presence.redis.url)
    except ValueError as err:
        raise ConfigError(config.source, key, str(err)) from None
    streams = config.cluster.manager == "redis-streams"
    if target.topology == "cluster" and not streams:
        # PUBLISH on a cluster reaches every node through the cluster bus: no scaling,
        # and python-socketio's manager cannot follow a cluster anyway.
        raise ConfigError(
            config.source,
            "cluster.manager",
            f'"redis" (pub/sub) cannot run on the Redis Cluster URL of {key}: '
            'use manager = "redis-streams", or a [cluster] url of one server or Sentinel',
        )
    if target.topology == "cluster" and config.cluster.routing == "targeted":
        # Targeted routing reads several room sets in one SUNION: they cross slots.
        raise ConfigError(
            config.source,
            "cluster.routing",
            f'"targeted" cannot run on the Redis Cluster URL of {key} (its room sets '
            'cross slots): use routing = "broadcast"',
        )
    if target.topology == "sentinel" and target.tls and not streams:
        raise ConfigError(
            config.source, key, "python-socketio's manager has no TLS Sentinel (rediss+sentinel)"
        )


#: Young-generation collection threshold while serving (CPython's default: 700).
#: Every event allocates dozens of containers, so at 700 the collector ran every few
#: acks; bench/ measured ~+45% acks per CPU-second from this (docs/performance.md).
GC_GEN0_THRESHOLD = 50_000
_gc_tuned = False


def tune_gc() -> None:
    """Once per process: freeze start-up objects out of the collector, collect less often."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()  # modules, config, plugins: never garbage, no need to scan them again
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 1000)


#: Shortest API key production accepts: a guessable key opens the whole HTTP API.
MIN_API_KEY_CHARS = 16


def api_keys(config: Config) -> list[str]:
    """The API keys of ``[api] keys`` and ``keys_file``; raise ConfigError for weak ones."""
    keys = list(config.api.keys)
    _check_api_keys(config, "api.keys", keys)
    if config.api.keys_file:
        try:
            with open(config.api.keys_file, encoding="utf-8") as fh:
                from_file = [line.strip() for line in fh if line.strip()]
        except OSError as err:
            raise ConfigError(
                config.source, "api.keys_file", f"unreadable ({err.strerror})"
            ) from None
        _check_api_keys(config, "api.keys_file", from_file)
        keys += from_file
    return keys


def _check_api_keys(config: Config, key: str, keys: list[str]) -> None:
    # An empty key would match "Authorization: Bearer" with nothing after it.
    if any(not k.strip() for k in keys):
        raise ConfigError(config.source, key, "an API key is empty")
    if config.production and any(len(k) < MIN_API_KEY_CHARS for k in keys):
        raise ConfigError(
            config.source, key, f"production needs API keys of >= {MIN_API_KEY_CHARS} characters"
        )


def origin_policy(allowed: list[str]) -> Any:
    """python-engineio's ``cors_allowed_origins`` for our list.

    [] is same-origin only and ["*"] any. With a list, the server's own origin is
    allowed too: the pages it serves itself (the dashboard) must reach their feed.
    """
    if not allowed:
        return None
    if "*" in allowed:
        return "*"
    listed = frozenset(allowed)

    def allow(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin in listed:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin == f"{environ.get('wsgi.url_scheme', 'http')}://{host}"

    return allow


def _make_manager(config: Config) -> socketio.AsyncManager:
    # Every manager gets the room index (sanic_rt/room_index.py): without it a
    # disconnect or rooms(sid) costs as much as all the rooms on the node.
    url = config.cluster.url or config.presence.redis.url
    if config.cluster.manager == "redis-streams":
        streams = TargetedStreamManager if config.cluster.routing == "targeted" else StreamManager
        return indexed_manager(streams)(
            url,
            channel=config.cluster.channel,
            maxlen=config.cluster.stream_maxlen,
            timeout=config.cluster.timeout,
            connect_timeout=config.presence.redis.connect_timeout,
        )
    if config.cluster.manager == "redis":
        # A bounded connect: an emit awaits its publish, so an unreachable Redis
        # must not hold a handler for the OS's TCP timeout. No read timeout: the
        # manager's subscriber blocks reading between messages.
        options = {"socket_connect_timeout": config.presence.redis.connect_timeout}
        # Publish first, local delivery only after it: see managers.py.
        return indexed_manager(RedisManager)(
            url, channel=config.cluster.channel, redis_options=options
        )
    if config.recovery.enabled:
        recovery = config.recovery
        log_manager = indexed_manager(MemoryLogManager)
        return log_manager(MemoryEventLog(recovery.max_disconnection, recovery.max_log_events))
    return indexed_manager(socketio.AsyncManager)()


#: what the gateway keeps on ``app.ctx``; a host app must not use these names
CTX_NAMES = ("gateway", "events", "asgi", "check_api_key")


def _check_host(app: Sanic) -> None:
    """Refuse a host app whose ``app.ctx`` already holds one of our names."""
    taken = [name for name in CTX_NAMES if hasattr(app.ctx, name)]
    if taken:
        raise ValueError(
            f"cannot mount sanic-rt into Sanic app {app.name!r}: app.ctx.{taken[0]} is "
            "already set (sanic-rt is attached already, or the app uses that name)"
        )


def _enable_recovery(sio: GatewayServer, config: Config) -> None:
    """Connection state recovery on the manager that logs events (see check_deployment)."""
    if not config.recovery.enabled:
        return
    manager = sio.manager
    limits = SessionLimits(config.auth.max_connections_per_user, config.recovery.max_sessions)
    recovery = Recovery(manager.event_log, config.recovery.max_disconnection, limits)
    recovery.server = sio
    manager.recovery = sio.recovery = recovery


def create_app(
    config: Config | None = None,
    *,
    extra_plugins: Iterable[tuple[str, Any]] = (),
    clock: Callable[[], float] = time.time,
    app: Sanic | None = None,
) -> Sanic:
    """Build the app. Raises ConfigError or PluginError for bad config or plugins.

    With ``app``, mount the gateway into that existing Sanic app instead (see
    :func:`sanic_rt.attach`, the documented way): its routes, middleware,
    listeners, config and ``app.ctx`` stay as they are; added are the
    ``/api/v1/`` routes with their API-key check and error envelope, the
    operations routes the config turns on, our listeners and
    ``app.ctx.gateway``/``events``/``asgi``/``check_api_key``.
    """
    if app is not None:
        _check_host(app)
    config = config or load_config()
    plugins = PluginHost(config)
    plugins.load(extra_plugins)
    backends = plugins.backends()
    name = config.presence.backend
    if name not in backends and name in plugins.import_errors:
        raise ConfigError(
            config.source,
            "presence.backend",
            f"backend {name!r} failed to import: {plugins.import_errors[name]}",
        )
    if name not in backends:
        raise ConfigError(
            config.source,
            "presence.backend",
            f"unknown backend {name!r} (have: {', '.join(sorted(backends))})",
        )
    # The [presence] section is the backend's Timings: one object, no copy.
    backend = backends[name](config, config.presence)
    check_deployment(config, backend.shared)
    operations.check_config(config)
    keys = api_keys(config)
    server = config.server
    quiet_socketio_logs()
    install_log_redaction()
    sio = GatewayServer(
        async_mode="asgi",
        client_manager=_make_manager(config),
        cors_allowed_origins=origin_policy(server.cors_allowed_origins),
        transports=list(server.transports),
        ping_interval=server.ping_interval,
        ping_timeout=server.ping_timeout,
        max_http_buffer_size=server.max_payload_bytes,
        always_connect=False,
        connect_timeout=server.connect_timeout,
        # In order, per connection: a chat:join must land before the chat:message
        # sent right after it. Handlers are short (backend calls time out).
        async_handlers=False,
        json=wire_json,  # orjson, meaning-preserving (sanic_rt/wire_json.py)
        serializer=GatewayPacket,  # a malformed payload is answered (sanic_rt/sio_server.py)
        logger=False,
        engineio_logger=False,
    )
    if config.cluster.manager:
        sio.emit_timeout = config.cluster.timeout
    _enable_recovery(sio, config)
    presence = Presence(backend, config.presence, config.auth.max_connections_per_user, clock)
    gateway = Gateway(
        config=config,
        sio=sio,
        presence=presence,
        verifier=TokenVerifier(config),
        plugins=plugins,
    )
    events = PresenceEvents(config, backend, plugins)

    async def publish(changes: list[Any]) -> None:
        try:
            await gateway.publish_presence(changes)
        finally:  # the events go out even when the bus could not take the change
            await events.dispatch(changes)

    presence.publisher = publish
    sio.manager.presence_subscriptions = gateway.subscriptions
    presence.evictor = gateway.evict
    namespaces = {"/": ("sanic_rt", BaseNamespace), **plugins.namespaces()}
    for path, (plugin_name, namespace_class) in namespaces.items():
        sio.register_namespace(plugins.build_namespace(plugin_name, namespace_class, path, gateway))
    gateway.namespaces = list(namespaces)
    dashboard = operations.dashboard_namespace(config, gateway, keys)
    if dashboard is not None:
        sio.register_namespace(dashboard)

    standalone = app is None
    if app is None:
        app = Sanic(f"sanic_rt_{next(_app_numbers)}", configure_logging=False)
        # Enforced in front of Sanic (limit_body_size): under ASGI Sanic's own check never runs.
        app.config.REQUEST_MAX_SIZE = server.max_request_bytes
        # TouchUp recompiles Sanic methods from source and fails when several apps
        # share a process (tests); it only trims unused signal dispatch.
        app.config.TOUCHUP = False
        # Sanic's banner (eight lines per worker, "mode: production" even in dev) would
        # drown our one start-up summary (server.startup_summary).
        app.config.MOTD = False
        app.ctx.config = config
    app.ctx.gateway = gateway
    app.ctx.events = events
    http_api.install(
        app, keys, config.production, server.cors_allowed_origins, standalone=standalone
    )
    for blueprint in plugins.blueprints():
        app.blueprint(blueprint)
    operations.install(app, config, keys, gateway)

    @app.before_server_start
    async def start_services(app: Sanic) -> None:
        await presence.start()
        await events.start()
        if not sio.manager_initialized:
            # python-socketio subscribes to the cluster channel on the first
            # client's connect; until then emits from other nodes miss us.
            sio.manager_initialized = True
            sio.manager.initialize()
        await plugins.notify("startup", app=app)
        tune_gc()

    @app.after_server_stop
    async def stop_services(app: Sanic) -> None:
        await plugins.notify("shutdown", app=app)
        await presence.close()
        await events.close()
        await close_manager(sio.manager)

    asgi = socketio.ASGIApp(sio, other_asgi_app=app)
    host = None if standalone else app
    app.ctx.asgi = limit_body_size(
        asgi, _body_limit(server, asgi.engineio_path, host), _close_polling_session(sio)
    )
    return app


def _body_limit(
    server: ServerConfig, engineio_path: str, host: Sanic | None = None
) -> Callable[[dict[str, Any]], int]:
    def limit_for(scope: dict[str, Any]) -> int:
        # Long-polling POSTs carry Engine.IO packets: the packet limit applies.
        if (scope["path"].rstrip("/") + "/").startswith(engineio_path):
            return server.max_payload_bytes
        if host is not None and not scope["path"].startswith(http_api.API_PREFIX):
            # An attached app's own routes keep the app's own limit (uploads...).
            return int(host.config.REQUEST_MAX_SIZE)
        return server.max_request_bytes

    return limit_for


def _close_polling_session(sio: GatewayServer) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def close(scope: dict[str, Any]) -> None:
        # An oversized long-polling POST ends its Engine.IO session, as a
        # websocket frame over max_payload_bytes closes that connection.
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        socket = sio.eio.sockets.get((query.get("sid") or [""])[0])
        if socket is not None:
            log.info("closing Engine.IO session: long-polling POST over max_payload_bytes")
            # Without waiting for the client to fetch the CLOSE packet: it may never.
            await socket.close(wait=False)

    return close
