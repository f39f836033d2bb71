"""Hosting the gateway in an existing Sanic application.

:func:`attach` mounts sanic-rt into a Sanic app a team already runs and
returns the ASGI app to serve: Socket.IO (``/socket.io/``) in front of the
host app, which keeps its own routes, middleware, listeners and ``app.ctx``
and gains the ``/api/v1/`` routes. Serve the returned object with any ASGI
server (``uvicorn shop:app``), or with ``sanic-rt serve --app shop:app``,
which finds it (or a Sanic app to attach to) through :func:`load_app`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from sanic import Sanic

from .app import create_app
from .config import Config, ConfigError, load_config
from .server import served_app

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HostedApp:
    """The ASGI app :func:`attach` returns: serve this, not the Sanic app.

    Requests under ``/socket.io/`` go to the Socket.IO server and everything
    else (the ASGI lifespan too, so the host app's listeners run) to the
    Sanic app. Request heads are bounded, and ``[server] access_log`` is
    written, as under ``sanic-rt serve``.

    :ivar sanic_app: the host Sanic app.
    :ivar config: the gateway's configuration.
    """

    def __init__(self, sanic_app: Sanic[Any, Any], config: Config) -> None:
        self.sanic_app = sanic_app
        self.config = config
        self._asgi = served_app(config, sanic_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)


def attach(
    app: Sanic[Any, Any],
    config: Config | None = None,
    *,
    extra_plugins: Iterable[tuple[str, Any]] = (),
) -> HostedApp:
    """Mount sanic-rt into an existing Sanic app; return the ASGI app to serve.

    The host app keeps its routes, middleware, listeners, ``app.config`` and
    ``app.ctx``. Added: the Socket.IO server at ``/socket.io/`` (in front of
    Sanic, in the returned ASGI app), the HTTP API under ``/api/v1/`` with its
    API-key check and error envelope, the plugins' namespaces and routes, a
    ``before_server_start`` and an ``after_server_stop`` listener (presence
    jobs), the metrics, dashboard and Admin UI routes at their configured
    paths when ``[metrics]``, ``[dashboard]``, ``[admin]`` turn them on, and
    ``app.ctx.gateway`` (see :func:`~sanic_rt.api.gateway_of`). The
    standalone server's ``/``, ``/health``, ``/ready`` and its JSON 404s are
    not added; the host's ``REQUEST_MAX_SIZE`` bounds its own routes' bodies. Serve
    the result with any ASGI server, e.g. ``uvicorn shop:app``::

        from sanic import Sanic
        from sanic_rt import attach, load_config

        shop = Sanic("shop")        # the existing app, its routes and listeners
        app = attach(shop, load_config("sanic-rt.toml"))

    :param app: the host Sanic app. Attach before it starts serving.
    :param config: the gateway's configuration; default :func:`load_config`
        (``SANIC_RT_*`` environment only, dev mode).
    :param extra_plugins: ``(name, module)`` pairs registered as plugins
        besides the configured ones.
    :raises ValueError: ``app.ctx`` already holds ``gateway``, ``events``,
        ``asgi`` or ``check_api_key`` (sanic-rt is attached already, or the app
        uses the name).
    :raises ConfigError: bad configuration.
    :raises PluginError: a plugin failed to load.
    """
    config = config or load_config()
    create_app(config, extra_plugins=extra_plugins, app=app)
    return HostedApp(app, config)


def load_app(spec: str, config: Config | None) -> HostedApp:
    """The app named by ``module:attribute``, as ``sanic-rt serve --app`` serves it.

    The attribute is either :func:`attach`'s result, or a Sanic app, which is
    attached here with ``config`` (``--config``; default the environment's).
    The module is imported with the current directory on ``sys.path``, as
    uvicorn does. Problems raise :class:`ConfigError` naming ``--app``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError("--app", spec, "expected module:attribute, e.g. shop:app")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError("--app", spec, f"cannot import {module_name!r} ({err})") from None
    target = getattr(module, attribute, None)
    if isinstance(target, HostedApp):
        return target
    if isinstance(target, Sanic):
        if hasattr(target.ctx, "gateway"):
            # attach()ed by the module, which kept only the Sanic app.
            return HostedApp(target, target.ctx.gateway.config)
        return attach(target, config)
    raise ConfigError(
        "--app",
        spec,
        f"expected a Sanic app or the result of sanic_rt.attach(), got {type(target).__name__}",
    )
