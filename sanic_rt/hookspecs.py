"""Hook specifications: the whole plugin interface of sanic-rt.

Hooks are called with keyword arguments; an implementation may take any
subset of them. A hook may return a value or a coroutine; the host awaits
coroutines. Each hook has a section in docs/plugins.md (a test checks it).
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("sanic_rt")
hookimpl = pluggy.HookimplMarker("sanic_rt")


@hookspec
def register_namespaces(register: Any, config: Any, settings: dict) -> None:
    """Add Socket.IO namespaces.

    :param register: ``register(path, namespace_class)``; the class must subclass
        :class:`sanic_rt.namespace.BaseNamespace`. Two plugins claiming one path
        stop start-up with both plugin names in the message.
    :param config: the whole :class:`sanic_rt.config.Config`.
    :param settings: this plugin's own ``[plugins.<name>]`` table (a dict).
    """


@hookspec
def register_routes(register: Any, config: Any, settings: dict) -> None:
    """Add HTTP routes: ``register(blueprint)`` with a Sanic ``Blueprint``."""


@hookspec
def configure(settings: dict, config: Any) -> Any:
    """Validate this plugin's ``[plugins.<name>]`` table at start-up.

    Raise :class:`sanic_rt.plugins.PluginConfigError` (or ``ValueError``) with a
    one-line reason; start-up then exits with status 2 naming the plugin.
    """


@hookspec
def startup(app: Any) -> Any:
    """Called once per process when the app starts, after the presence backend is up."""


@hookspec
def shutdown(app: Any) -> Any:
    """Called once per process when the app stops, before the presence backend closes."""


@hookspec
def authorize(user: Any, namespace: str, action: str, resource: Any, settings: Any) -> Any:
    """Allow or deny an action: return ``False`` to deny, ``True`` or ``None`` otherwise.

    Any plugin's ``False`` wins. Called with ``action="connect"`` (resource
    ``None``) when a connection is made; a deny refuses it with ``forbidden``.
    ``user`` is a :class:`sanic_rt.auth.AuthenticatedUser`; ``settings`` is this
    plugin's own settings (what its ``configure`` returned, else its table).
    """


@hookspec
def user_connected(user: Any, namespace: str, sid: str) -> Any:
    """A namespace connection of ``user`` was accepted and registered in presence."""


@hookspec
def user_disconnected(user: Any, namespace: str, sid: str) -> Any:
    """A namespace connection of ``user`` closed (presence grace has started if it was the last)."""


@hookspec
def presence_changed(event: dict, settings: Any) -> Any:
    """A presence change was announced (once cluster-wide, on the node that decided it).

    :param event: the presence event (docs/events.md): ``id``, ``type``
        (``presence.online`` | ``presence.offline`` | ``presence.status``),
        ``user_id``, ``online``, ``status``, ``last_seen``, ``seq``, ``at``; the
        same changes ``presence:update`` subscribers get. Your own copy.
    :param settings: this plugin's own settings, as for ``authorize``.

    Awaited before the operation that made the change answers: keep it short
    and hand slow work to a task. An exception is logged and ignored.
    """


@hookspec
def follows(user: Any, namespace: str, claims: dict, settings: Any) -> Any:
    """User ids this connection follows automatically (its automatic presence subscriptions).

    Return an iterable of user ids (or ``None``). Results from all plugins are
    combined as a union. Decided once, when the connection is made.
    ``settings`` is this plugin's own settings, as for ``authorize``.
    """


@hookspec
def register_backends(register: Any) -> None:
    """Add presence backends: ``register(name, factory)``; ``factory(config, timings)``
    returns a :class:`sanic_rt.backend.PresenceBackend`. ``[presence] backend = "<name>"``
    selects one."""
