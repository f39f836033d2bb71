"""Hook specifications: the whole plugin interface of sanic-rt.

Hooks are called with keyword arguments; an implementation may take any
subset of them. A hook may return a value or a coroutine; the host awaits
coroutines. Each hook has a section in docs/plugins.md (a test checks it).
Hooks are called through pluggy, so ``@hookimpl(wrapper=True)``,
``tryfirst=True`` and ``trylast=True`` work as pluggy documents them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sanic import Blueprint, Sanic

    from .auth import AuthenticatedUser
    from .backend import BackendFactory
    from .config import Config
    from .namespace import BaseNamespace

hookspec = pluggy.HookspecMarker("sanic_rt")

#: The decorator that marks a function as a hook implementation (pluggy's
#: ``HookimplMarker("sanic_rt")``): ``@hookimpl`` or ``@hookimpl(tryfirst=True)``.
hookimpl = pluggy.HookimplMarker("sanic_rt")

#: ``register(path, namespace_class)``, handed to ``register_namespaces``.
RegisterNamespace = Callable[[str, "type[BaseNamespace]"], None]
#: ``register(blueprint)``, handed to ``register_routes``.
RegisterRoutes = Callable[["Blueprint"], None]
#: ``register(name, factory)``, handed to ``register_backends``.
RegisterBackend = Callable[[str, "BackendFactory"], None]


@hookspec
def register_namespaces(register: RegisterNamespace, config: Config, settings: Any) -> None:
    """Add Socket.IO namespaces.

    :param register: ``register(path, namespace_class)``; the class must subclass
        :class:`~sanic_rt.api.BaseNamespace`. Two plugins claiming one path
        stop start-up with both plugin names in the message.
    :param config: the whole :class:`~sanic_rt.api.Config`.
    :param settings: this plugin's own settings (what its ``configure``
        returned, else its ``[plugins.<name>]`` table).
    """


@hookspec
def register_routes(register: RegisterRoutes, config: Config, settings: Any) -> None:
    """Add HTTP routes: ``register(blueprint)`` with a Sanic ``Blueprint``.

    :param register: ``register(blueprint)``; build the blueprint inside the
        hook and give it a unique name.
    :param config: the whole :class:`~sanic_rt.api.Config`.
    :param settings: this plugin's own settings.
    """


@hookspec
def configure(settings: dict[str, Any], config: Config) -> Any:
    """Validate this plugin's ``[plugins.<name>]`` table at start-up.

    :param settings: the raw table (``{}`` when absent).
    :param config: the whole :class:`~sanic_rt.api.Config`.
    :returns: the plugin's settings, which every later hook receives as
        ``settings`` (``None`` keeps the raw table).
    :raises PluginConfigError: (or ``ValueError``) with a one-line reason;
        start-up then exits with status 2 naming the plugin.
    """


@hookspec
def startup(app: Sanic[Any, Any]) -> Awaitable[None] | None:
    """Called once per process when the app starts, after the presence backend is up.

    :param app: the Sanic app; ``app.ctx.gateway`` is the
        :class:`~sanic_rt.api.Gateway`, and ``app.ctx`` is the place for
        this plugin's per-app resources.
    """


@hookspec
def shutdown(app: Sanic[Any, Any]) -> Awaitable[None] | None:
    """Called once per process when the app stops, before the presence backend closes.

    :param app: the Sanic app.
    """


@hookspec
def authorize(
    user: AuthenticatedUser, namespace: str, action: str, resource: Any, settings: Any
) -> bool | Awaitable[bool | None] | None:
    """Allow or deny an action: return ``False`` to deny, ``True`` or ``None`` otherwise.

    Any plugin's ``False`` wins. Called with ``action="connect"`` (resource
    ``None``) when a connection is made; a deny refuses it with ``forbidden``.

    :param user: who acts.
    :param namespace: the namespace path.
    :param action: what the caller asks about (``"connect"``, ``"join"``, ...).
    :param resource: what the action is on (a conversation id, ...), or ``None``.
    :param settings: this plugin's own settings.
    """


@hookspec
def user_connected(user: AuthenticatedUser, namespace: str, sid: str) -> Awaitable[None] | None:
    """A namespace connection of ``user`` was accepted and registered in presence.

    :param user: who connected.
    :param namespace: the namespace path.
    :param sid: the connection's Socket.IO session id.
    """


@hookspec
def user_disconnected(user: AuthenticatedUser, namespace: str, sid: str) -> Awaitable[None] | None:
    """A namespace connection of ``user`` closed (presence grace has started if it was the last).

    :param user: who disconnected.
    :param namespace: the namespace path.
    :param sid: the connection's Socket.IO session id.
    """


@hookspec
def presence_changed(event: dict[str, Any], settings: Any) -> Awaitable[None] | None:
    """A presence change was announced (once cluster-wide, on the node that decided it).

    :param event: the presence event (docs/events.md): ``id``, ``type``
        (``presence.online`` | ``presence.offline`` | ``presence.status``),
        ``user_id``, ``online``, ``status``, ``last_seen``, ``seq``, ``at``; the
        same changes ``presence:update`` subscribers get. A copy: changing it
        changes nothing else.
    :param settings: this plugin's own settings.

    Awaited before the operation that made the change answers: keep it short
    and hand slow work to a task. An exception is logged naming the plugin and
    never breaks presence.
    """


@hookspec
def follows(
    user: AuthenticatedUser, namespace: str, claims: dict[str, Any], settings: Any
) -> Iterable[str] | Awaitable[Iterable[str] | None] | None:
    """User ids this connection follows automatically (its automatic presence subscriptions).

    Results from all plugins are combined as a union. Decided once, when the
    connection is made.

    :param user: who connects.
    :param namespace: the namespace path.
    :param claims: the verified token's claims (also ``user.claims``).
    :param settings: this plugin's own settings.
    :returns: an iterable of user ids, or ``None``.
    """


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Add presence backends.

    :param register: ``register(name, factory)``; ``factory(config, timings)``
        returns a :class:`~sanic_rt.api.PresenceBackend`. ``[presence] backend =
        "<name>"`` selects one.
    """
