"""Serving: uvicorn runs the ASGI app (Socket.IO in front of Sanic).

With ``workers > 1`` uvicorn forks workers sharing one port; each builds
its own app from the same config (passed through the environment).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from . import metrics
from .app import create_app
from .config import Config, _mask_url, load_config, masked
from .lean_asyncio import LeanEvent, LeanQueue
from .logs import configure_logging, with_access_log

log = logging.getLogger("sanic_rt")

CONFIG_PATH_ENV = "SANIC_RT_CONFIG_PATH"
#: ``serve --app module:attribute``, for the worker processes
APP_SPEC_ENV = "SANIC_RT_APP"
# Headroom over max_payload_bytes for Engine.IO/Socket.IO framing.
WS_FRAME_HEADROOM = 1024


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, with two fixes.

    For a handshake that ``websockets`` rejects while parsing (a header line
    over 8 KiB, e.g. a huge ``Authorization`` token; too many headers) uvicorn
    never writes the prepared 431/414 response: the client waits until its own
    timeout and the socket stays open. We write it and close.

    uvicorn keeps the handshake's parsed request and response for the life of
    the connection though only the handshake reads them (~1.6 KB of every idle
    connection); we drop them once the accept has gone out, and empty the
    request's headers, which ``websockets``' parser (``ServerProtocol.parse``,
    a generator running for the connection's life) still holds in a local.
    Its receive queue and ``writable`` event are the lean kinds
    (sanic_rt/lean_asyncio.py), ~3.8 KB less per connection.
    """

    #: empty the parsed handshake headers websockets' parser keeps (bench/baseline.py: off)
    drop_handshake_headers = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's WebSocketsSansIOProtocol.__init__ makes both empty, and set.
        self.queue = LeanQueue()
        self.writable = LeanEvent()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            if self.drop_handshake_headers and getattr(self, "request", None) is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]


#: Request-head bound for every HTTP and WebSocket request. uvicorn's httptools
#: parser has none (a 1 MB header was accepted), and long-polling requests come
#: through it; the websocket handshake is bounded per line by ``websockets``.
MAX_HEADER_BYTES = 16 * 1024


def limit_header_size(app: Any, limit: int = MAX_HEADER_BYTES) -> Any:
    """ASGI middleware answering 431 (HTTP) or refusing the handshake (WebSocket)."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > limit:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                body = b"request header fields too large"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def app_from_env() -> Any:
    """uvicorn factory for worker processes."""
    path = os.environ.get(CONFIG_PATH_ENV) or None
    config = load_config(path)
    # Workers are spawned, not forked: the parent's logging set-up is not theirs.
    configure_logging(config.server.log_level, config.server.log_format)
    if os.environ.get(APP_SPEC_ENV):
        from .hosting import load_app  # hosting imports this module

        return load_app(os.environ[APP_SPEC_ENV], config)
    return served_app(config, create_app(config))


def served_app(config: Config, app: Any) -> Any:
    """The ASGI callable uvicorn serves: the app behind the header bound (and access log)."""
    asgi = limit_header_size(app.ctx.asgi)
    return with_access_log(asgi) if config.server.access_log else asgi


def uvicorn_config(config: Config, app: Any, **extra: Any) -> uvicorn.Config:
    server = config.server
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        ws=WebSocketProtocol,
        # permessage-deflate costs ~35 KB per connection and CPU on every frame.
        ws_per_message_deflate=False,
        ws_max_size=server.max_payload_bytes + WS_FRAME_HEADROOM,
        ws_ping_interval=None,  # Engine.IO has its own heartbeat
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=server.shutdown_timeout,
        **extra,
    )


def serve(config: Config, config_path: str | None, app_spec: str | None = None) -> None:
    """Serve the standalone app, or with ``app_spec`` (``--app``) a host app sanic-rt is in."""
    # Build the app once here even with workers: bad config or plugins must
    # exit 2 from the parent, before any worker is forked.
    if app_spec is None:
        app = create_app(config)
        asgi = served_app(config, app)
    else:
        from .hosting import load_app  # hosting imports this module

        hosted = load_app(app_spec, config)
        app, asgi, config = hosted.sanic_app, hosted, hosted.config
        os.environ[APP_SPEC_ENV] = app_spec
    log.info(startup_summary(config, app), extra={"path": config.source})
    log.debug("effective config (secrets masked): %s", json.dumps(masked(config)))
    if config.server.workers > 1:
        if config_path:
            os.environ[CONFIG_PATH_ENV] = os.path.abspath(config_path)
        uv = uvicorn_config(config, "sanic_rt.server:app_from_env", factory=True)
        uv.workers = config.server.workers
        metrics_dir = metrics.prepare_multiprocess() if config.metrics.enabled else None
        try:
            _run_workers(uv)
        finally:
            if metrics_dir:
                metrics.cleanup_multiprocess(metrics_dir)
        return
    _exit_cleanly_after_shutdown()
    uvicorn.Server(uvicorn_config(config, asgi)).run()


def startup_summary(config: Config, app: Any) -> str:
    """One line saying what runs: version, mode, URL, workers, storage, bus, plugins, paths."""
    from . import __version__  # here: sanic_rt/__init__ imports this module (via testing)

    server, cluster = config.server, config.cluster
    plugins = app.ctx.gateway.plugins.infos.values()
    bus = f"{cluster.manager} {_mask_url(cluster.url or config.presence.redis.url)}"
    parts = [
        f"sanic-rt {__version__} started",
        f"mode={server.mode}",
        f"url=http://{server.host}:{server.port}",
        f"workers={server.workers}",
        f"backend={config.presence.backend} {_backend_location(config)}".rstrip(),
        f"cluster={bus if cluster.manager else 'none'}",
        "plugins=" + (", ".join(f"{p.name} {p.version}" for p in plugins) or "none"),
        f"metrics={config.metrics.path if config.metrics.enabled else 'off'}",
        f"admin={'/admin-ui/ (namespace /admin)' if config.admin.enabled else 'off'}",
        f"dashboard={config.dashboard.path if config.dashboard.enabled else 'off'}",
        f"config={config.source}",
    ]
    return "; ".join(parts)


def _backend_location(config: Config) -> str:
    presence = config.presence
    if presence.backend == "redis":
        return _mask_url(presence.redis.url)
    if presence.backend == "memcached":
        return ",".join(presence.memcached.servers)
    return ""


def _exit_cleanly_after_shutdown() -> None:
    # uvicorn drains, then re-raises the captured SIGTERM with the handler that
    # was installed before it; by default that kills us with -15. A graceful
    # shutdown is a normal exit: status 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def _run_workers(uv: uvicorn.Config) -> None:
    from uvicorn.supervisors import Multiprocess

    sock = uv.bind_socket()
    Multiprocess(uv, sockets=[sock]).run()
