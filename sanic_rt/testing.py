"""Helpers for testing plugins: sanic-rt's own tests use them, and so can yours.

Like tox's ``register_inline_plugin``: build a throwaway plugin from plain
functions, hand it to an app, serve that app for real on a loopback port and
talk to it with a real Socket.IO client::

    from sanic_rt.testing import config_from_dict, inline_plugin, running_app, token

    async def test_my_hook():
        config = config_from_dict({"auth": {"secret": "x" * 32}})
        plugin = inline_plugin("deny_mallory", authorize=lambda user, action: ...)
        async with running_app(config, plugins=[plugin]) as (app, url):
            ...  # socketio.AsyncClient().connect(url, auth={"token": token(config, "alice")})
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import uvicorn
from sanic import Sanic

from .app import create_app
from .auth import mint_token
from .config import Config, load_config
from .hookspecs import hookimpl
from .server import uvicorn_config

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


def inline_plugin(name: str, **hooks: Callable[..., Any]) -> tuple[str, Any]:
    """A plugin object whose hook implementations are the given functions.

    :param name: the plugin's name (in messages and ``[plugins.<name>]``).
    :param hooks: hook name -> function (``register_namespaces=...``); a name
        that is no hook fails at load like any typo'd hook.
    :returns: ``(name, plugin)`` for :func:`running_app` or
        ``create_app(extra_plugins=[...])``.

    For pluggy options (``wrapper=True``, ``tryfirst=True``) register an object
    whose methods carry ``@hookimpl(...)`` instead: ``("name", obj)``.
    """
    plugin = types.SimpleNamespace()
    for hook_name, function in hooks.items():
        setattr(plugin, hook_name, hookimpl(function))
    return name, plugin


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A :class:`~sanic_rt.api.Config` from nested dicts shaped like the TOML file.

    :param data: sections as dicts, e.g. ``{"auth": {"secret": "..."}}``; no
        ``[server] mode`` needed (it defaults to dev).
    :raises ConfigError: as for a file.

    The process environment is ignored, so ``SANIC_RT_*`` variables never leak in.
    """
    overrides: dict[str, Any] = {}

    def flatten(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, Mapping) and value:
                flatten(value, f"{prefix}{key}.")
            else:
                overrides[f"{prefix}{key}"] = value

    flatten(data, "")
    return load_config(None, env={}, overrides=overrides)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A config dict (shaped like the file) as TOML text, for a server started through the CLI.

    :param data: sections as dicts, as for :func:`config_from_dict`.
    :param prefix: the dotted table name ``data`` is nested under (for recursion).
    """
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(scalars) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + to_toml(value, name + ".")
    return out


def token(config: Config, user_id: str, ttl: float = 600, **claims: Any) -> str:
    """A token the app built from ``config`` accepts (HS* with its secret).

    :param config: the app's config (its ``[auth]`` secret signs the token).
    :param user_id: the ``sub`` claim.
    :param ttl: seconds until the token expires.
    :param claims: extra claims, e.g. ``friends=["bob"]`` or ``role="agent"``.
    """
    return mint_token(config, user_id, ttl, claims)


@contextlib.asynccontextmanager
async def running_app(
    config: Config, plugins: Iterable[tuple[str, Any]] = ()
) -> AsyncIterator[tuple[Sanic[Any, Any], str]]:
    """Serve ``create_app(config, extra_plugins=plugins)`` in this process: ``(app, url)``.

    The real ASGI stack (uvicorn, python-socketio, Sanic) on a free port of
    127.0.0.1; the block begins once the server has really started, and it is
    stopped when the block ends. ``app.ctx.gateway`` is the app's
    :class:`~sanic_rt.api.Gateway`.

    :param config: the app's config (its host and port are replaced).
    :param plugins: extra ``(name, plugin)`` pairs, e.g. from :func:`inline_plugin`.
    """
    config = config.replace(server=dataclasses.replace(config.server, host=LOOPBACK, port=0))
    app = create_app(config, extra_plugins=plugins)
    server = uvicorn.Server(uvicorn_config(config, app.ctx.asgi))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,unused-ignore]
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the server stopped before it started")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start within {START_TIMEOUT}s")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, STOP_TIMEOUT)
