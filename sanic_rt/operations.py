"""What an operator sees: ``/metrics``, the presence dashboard and the Socket.IO Admin UI.

* ``[metrics]``: the Prometheus exposition at ``path`` (an API key in production),
  HTTP requests counted by route template, and two samplers per worker (event-loop
  lag; online users from the backend's stats every ``stats_interval``).
* ``[dashboard]``: a static page at ``path``; its data comes from the HTTP API
  and from the ``/dashboard`` Socket.IO namespace, both admitted by API key.
* ``[admin]``: python-socketio's ``instrument()`` on namespace ``/admin`` and
  the vendored ``@socket.io/admin-ui`` files at ``/admin-ui/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path
from typing import Any

import socketio
from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse, HTTPResponse, html, raw

from . import metrics
from .config import Config, ConfigError
from .gateway import Gateway
from .http_api import key_matches, require_api_key
from .presence import RateLimitedLog
from .presence_model import PublicView
from .tasks import BackgroundTasks

log = logging.getLogger("sanic_rt.operations")

STATIC_DIR = Path(__file__).parent / "static"
ADMIN_NAMESPACE = "/admin"
ADMIN_UI_PATH = "/admin-ui"
DASHBOARD_NAMESPACE = "/dashboard"
MIN_ADMIN_PASSWORD = 12
#: refused Admin UI logins an Engine.IO session may make before it is closed
MAX_ADMIN_LOGIN_FAILURES = 5
#: characters of a refused Admin UI user name that are logged
LOGGED_NAME_CHARS = 64
#: refused-login sessions remembered before those already closed are forgotten
_FAILURES_KEPT = 1024


RESERVED_PREFIXES = ("/api/", "/socket.io", ADMIN_UI_PATH)


def check_config(config: Config) -> None:
    """Raise :class:`ConfigError` for bad ``[metrics]``, ``[dashboard]`` or ``[admin]`` keys."""
    _check_paths(config)
    if config.admin.enabled:
        admin_password(config)


def _check_paths(config: Config) -> None:
    # Absolute, distinct, and not under a prefix something else serves.
    paths = {"metrics.path": config.metrics.path, "dashboard.path": config.dashboard.path}
    for key, path in paths.items():
        bad = not path.startswith("/") or path.rstrip("/") == "" or "<" in path
        if bad or any(path.startswith(p) for p in RESERVED_PREFIXES):
            raise ConfigError(
                config.source, key, "a path like /name, not under /api/, /socket.io or /admin-ui"
            )
    if config.metrics.path.rstrip("/") == config.dashboard.path.rstrip("/"):
        raise ConfigError(config.source, "dashboard.path", "the same as metrics.path")


def install(app: Sanic[Any, Any], config: Config, keys: list[str], gateway: Gateway) -> None:
    """Add the metrics, dashboard and admin routes that ``config`` turns on."""
    if config.metrics.enabled:
        metrics.enable()
        _install_metrics(app, config, gateway)
    else:
        metrics.disable()
    if config.dashboard.enabled:
        _install_dashboard(app, config)
    if config.admin.enabled:
        _install_admin(app, config, gateway)


# --- metrics -------------------------------------------------------------------------------


def _install_metrics(app: Sanic[Any, Any], config: Config, gateway: Gateway) -> None:
    samplers = BackgroundTasks()

    async def scrape(request: Request) -> HTTPResponse:
        metrics.flush()
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return raw(body, content_type=content_type)

    # Production: the /api/ key check (401 without a key; 404 with no keys configured).
    handler = require_api_key(scrape) if config.production else scrape
    app.add_route(handler, config.metrics.path, methods=["GET"], name="sanic_rt_metrics")

    async def count_request(request: Request, response: BaseHTTPResponse) -> None:
        route = request.route
        metrics.http_request(route.path if route is not None else None, response.status)

    app.register_middleware(count_request, "response")

    @app.before_server_start
    async def start_samplers(app: Sanic[Any, Any]) -> None:
        samplers.spawn(metrics.sample_loop_lag())
        stats = gateway.presence.stats
        samplers.spawn(metrics.refresh_online_users(stats, config.metrics.stats_interval))

    @app.after_server_stop
    async def stop_samplers(app: Sanic[Any, Any]) -> None:
        await samplers.cancel_all()


# --- the presence dashboard ------------------------------------------------------------------


def _install_dashboard(app: Sanic[Any, Any], config: Config) -> None:
    path = "/" + config.dashboard.path.strip("/")
    template = (STATIC_DIR / "dashboard" / "index.html").read_text(encoding="utf-8")
    page = template.replace("{{assets}}", path + "/assets")

    async def dashboard(request: Request) -> HTTPResponse:
        return html(page)

    app.add_route(dashboard, path, methods=["GET"], name="sanic_rt_dashboard")
    app.static(path + "/assets", STATIC_DIR / "dashboard", name="sanic_rt_dashboard_assets")


class DashboardNamespace(socketio.AsyncNamespace):
    """The dashboard's live feed: presence changes, to clients that sent an API key.

    A change is emitted once by the node that announced it; with a cluster
    manager that one emit reaches dashboards on every node.
    """

    def __init__(self, gateway: Gateway, keys: list[str]) -> None:
        super().__init__(DASHBOARD_NAMESPACE)
        self.gateway = gateway
        self.keys = [k.encode() for k in keys]
        self.open = not keys and not gateway.config.production
        self._background = BackgroundTasks()
        gateway.feed.listeners.append(self.announce)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        given = auth.get("api_key") if isinstance(auth, dict) else None
        if not self.open and not self._key_matches(given):
            message = "missing or wrong API key"
            raise socketio.exceptions.ConnectionRefusedError(
                message, {"code": "unauthorized", "message": message}
            )

    def _key_matches(self, given: Any) -> bool:
        return key_matches(given.encode() if isinstance(given, str) else b"", self.keys)

    def announce(self, changes: list[PublicView]) -> None:
        if changes:
            self._background.spawn(self._send([c.as_dict() for c in changes]))

    async def _send(self, changes: list[dict[str, Any]]) -> None:
        with contextlib.suppress(Exception):  # the feed is best effort (bus down)
            await self.emit("presence", changes)


def dashboard_namespace(config: Config, gateway: Gateway, keys: list[str]) -> Any:
    """The ``/dashboard`` namespace, or None when the dashboard is off."""
    return DashboardNamespace(gateway, keys) if config.dashboard.enabled else None


# --- the Socket.IO Admin UI ----------------------------------------------------------------


def admin_password(config: Config) -> str:
    """The Admin UI password; raises :class:`ConfigError` when it is missing or too short."""
    admin = config.admin
    password = admin.password
    if admin.password_file:
        try:
            password = Path(admin.password_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(
                config.source, "admin.password_file", f"unreadable ({err.strerror})"
            ) from None
    key = "admin.password_file" if admin.password_file else "admin.password"
    if not password:
        raise ConfigError(config.source, key, "the Admin UI needs a password")
    if config.production and len(password) < MIN_ADMIN_PASSWORD:
        raise ConfigError(
            config.source, key, f"production needs >= {MIN_ADMIN_PASSWORD} characters"
        )
    return password


def logged_name(name: Any) -> str:
    """A client-chosen name as it may be logged: repr, at most ``LOGGED_NAME_CHARS`` of it."""
    text = str(name)
    cut = "..." if len(text) > LOGGED_NAME_CHARS else ""
    return repr(text[:LOGGED_NAME_CHARS]) + cut


def _close_after_failed_logins(sio: socketio.AsyncServer, namespace: str) -> None:
    """Close an Engine.IO session after ``MAX_ADMIN_LOGIN_FAILURES`` refused logins on it.

    A refused namespace connect leaves the session open, so one session could
    otherwise guess passwords as fast as it can send (python-socketio's admin
    connect handler is wrapped; it is registered by ``instrument()``).
    """
    handlers = sio.handlers[namespace]
    admin_connect = handlers["connect"]
    failures: dict[str, int] = {}
    closures = RateLimitedLog(log)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        try:
            return await admin_connect(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            eio_sid = sio.manager.eio_sid_from_sid(sid, namespace)
            if eio_sid is not None and _count_failure(failures, eio_sid, sio) >= (
                MAX_ADMIN_LOGIN_FAILURES
            ):
                del failures[eio_sid]
                closures.warning(
                    "closed an Engine.IO session after %d refused Admin UI logins",
                    MAX_ADMIN_LOGIN_FAILURES,
                )
                # After the refusal is sent: a task, so CONNECT_ERROR goes out first.
                sio.start_background_task(_close_session, sio, eio_sid)
            raise

    handlers["connect"] = connect


def _count_failure(failures: dict[str, int], eio_sid: str, sio: socketio.AsyncServer) -> int:
    if len(failures) >= _FAILURES_KEPT:  # forget sessions that are gone
        for gone in [s for s in failures if s not in sio.eio.sockets]:
            del failures[gone]
    failures[eio_sid] = failures.get(eio_sid, 0) + 1
    return failures[eio_sid]


async def _close_session(sio: socketio.AsyncServer, eio_sid: str) -> None:
    close = getattr(sio, "close_session", None)  # GatewayServer also ends the websocket
    await (close(eio_sid) if close is not None else sio.eio.disconnect(eio_sid))


#: handshake headers (lower case, as the Admin UI shows them) that carry a credential
SECRET_HEADERS = ("authorization", "cookie")
#: query parameters that carry a credential (``[auth] allow_query_token``)
SECRET_QUERY = ("token",)
REDACTED = "[redacted]"


def _redact_handshakes(admin: Any) -> None:
    """Keep users' tokens out of what the Admin UI is sent about their connections.

    python-socketio's ``AsyncAdmin.serialize_socket`` (socketio/async_admin.py)
    sends each connection's handshake: every ``HTTP_*`` key of its environ and
    its parsed query string, i.e. a user's ``Authorization: Bearer`` JWT,
    cookies and ``?token=``, to whoever reads the UI. Every caller goes through
    ``self.serialize_socket``, so the instance attribute wraps them all;
    tests/test_admin_handshake.py fails if a token reaches the UI.
    """
    serialize = admin.serialize_socket

    def serialize_socket(*args: Any, **kwargs: Any) -> Any:
        socket = serialize(*args, **kwargs)
        handshake = socket.get("handshake") if isinstance(socket, dict) else None
        if isinstance(handshake, dict):
            for field, names in (("headers", SECRET_HEADERS), ("query", SECRET_QUERY)):
                values = handshake.get(field)
                if isinstance(values, dict):
                    for name in list(values):
                        if name.lower() in names:
                            values[name] = REDACTED
        return socket

    admin.serialize_socket = serialize_socket


def _install_admin(app: Sanic[Any, Any], config: Config, gateway: Gateway) -> None:
    username = config.admin.username.encode()
    password = admin_password(config).encode()
    refusals = RateLimitedLog(log)

    def check(auth: Any) -> bool:
        auth = auth if isinstance(auth, dict) else {}
        user, given = auth.get("username"), auth.get("password")
        user_ok = hmac.compare_digest(str(user or "").encode(), username)
        password_ok = hmac.compare_digest(str(given or "").encode(), password)
        if not (user_ok and password_ok):
            refusals.warning(
                "refused an Admin UI login (user %s): wrong user name or password",
                logged_name(user),
            )
            return False
        return True

    admin = gateway.sio.instrument(
        auth=check,
        mode="production" if config.production else "development",
        read_only=config.admin.read_only,
        namespace=ADMIN_NAMESPACE,
    )
    _redact_handshakes(admin)
    _close_after_failed_logins(gateway.sio, ADMIN_NAMESPACE)
    ui = STATIC_DIR / "admin-ui"
    app.static(ADMIN_UI_PATH, ui / "index.html", name="sanic_rt_admin_ui_index")
    app.static(ADMIN_UI_PATH + "/", ui, name="sanic_rt_admin_ui", index="index.html")
