"""Plugin discovery and the plugin manager.

Plugins are found through entry points: ``sanic_rt.plugins`` (namespaces,
routes, policies; chosen by ``[plugins] enabled``) and ``sanic_rt.backends``
(presence backends; always loaded). First-party plugins come through the same
groups as third-party ones.

Every hook is called through pluggy (``pm.hook.<name>(...)``), so wrappers
(``wrapper=True``/``hookwrapper=True``), ordering (``tryfirst``/``trylast``) and
``pm.enable_tracing()`` see every call. Arguments that differ per plugin (its
own ``settings``, a ``register`` callback that knows its name) are passed as
:class:`PerPlugin` values, which each implementation's adapter resolves.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .backend import BackendFactory
from .config import Config, enabled_plugins

PLUGIN_GROUP = "sanic_rt.plugins"
BACKEND_GROUP = "sanic_rt.backends"


class PluginError(Exception):
    """A plugin cannot be loaded or configured; ``str()`` is one line naming it."""


class PluginConfigError(ValueError):
    """Raised by a plugin's ``configure`` hook for an invalid ``[plugins.<name>]`` table."""


async def await_me_maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class PerPlugin:
    """A hook argument whose value depends on the implementing plugin.

    ``value_for(plugin_name)`` gives that plugin's value (its own settings, a
    ``register`` that records who registered); ``collect(plugin_name, result)``,
    if given, is told what each plugin's implementation returned.
    """

    __slots__ = ("collect", "value_for")

    def __init__(
        self,
        value_for: Callable[[str], Any],
        collect: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.value_for, self.collect = value_for, collect


#: set on an exception raised by a hook implementation: the plugin's name
FAILING_PLUGIN_ATTR = "sanic_rt_plugin"


def _blame(err: BaseException, plugin: str, hook: str) -> None:
    """Name the failing plugin in the exception (for logs and start-up errors)."""
    if getattr(err, FAILING_PLUGIN_ATTR, None) is None:
        setattr(err, FAILING_PLUGIN_ATTR, plugin)
        err.add_note(f"raised by plugin {plugin!r} in hook {hook!r}")


async def _blamed(awaitable: Any, plugin: str, hook: str) -> Any:
    try:
        return await awaitable
    except Exception as err:
        _blame(err, plugin, hook)
        raise


def _adapt(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    """``function`` with its :class:`PerPlugin` arguments resolved for ``plugin``.

    ``functools.wraps`` keeps the signature pluggy reads the argument names
    from; a generator (a wrapper) stays a generator function, as pluggy requires.
    """

    def resolved(args: tuple[Any, ...]) -> list[Any]:
        return [a.value_for(plugin) if isinstance(a, PerPlugin) else a for a in args]

    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def wrapper_adapter(*args: Any) -> Generator[Any, Any, Any]:
            return (yield from function(*resolved(args)))

        return wrapper_adapter

    @functools.wraps(function)
    def adapter(*args: Any) -> Any:
        try:
            result = function(*resolved(args))
        except Exception as err:
            _blame(err, plugin, hook)
            raise
        if inspect.isawaitable(result):
            result = _blamed(result, plugin, hook)
        for arg in args:
            if isinstance(arg, PerPlugin) and arg.collect is not None:
                arg.collect(plugin, result)
        return result

    return adapter


@dataclass
class PluginInfo:
    name: str
    version: str
    enabled: bool
    group: str
    namespaces: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    error: str = ""  # why a disabled plugin could not be loaded for the listing


def _one_line(err: Exception) -> str:
    # pluggy's messages end with the plugin object's repr and may span lines.
    return "; ".join(str(err).split(" in plugin ")[0].splitlines())


def discover(group: str = PLUGIN_GROUP) -> dict[str, Any]:
    """Entry points of a group by name."""
    return {ep.name: ep for ep in entry_points(group=group)}


def _version(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


class PluginHost:
    """One plugin manager per app (tests build several apps in one process)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pm = pluggy.PluginManager("sanic_rt")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.settings: dict[str, Any] = {}
        self.import_errors: dict[str, str] = {}  # backend entry points that failed to import

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # --- loading -----------------------------------------------------------------

    def load(self, extra: Iterable[tuple[str, Any]] = ()) -> None:
        """Load backends, the enabled plugins, and ``extra`` (name, object) pairs."""
        for name, ep in discover(BACKEND_GROUP).items():
            self._register_entry_point(name, ep, BACKEND_GROUP, required=False)
        available = discover(PLUGIN_GROUP)
        wanted = enabled_plugins(self.config)
        for name in wanted:
            if name not in available:
                raise PluginError(f"plugin {name!r}: enabled but not installed")
            self._register_entry_point(name, available[name], PLUGIN_GROUP, required=True)
        for name, obj in extra:
            self.register(obj, name)
        self._check_hooks()
        self._configure()

    def register(self, obj: Any, name: str) -> None:
        self._pm_register(obj, name)
        self.infos.setdefault(name, PluginInfo(name, "inline", True, PLUGIN_GROUP))

    def _register_entry_point(self, name: str, ep: Any, group: str, required: bool) -> None:
        try:
            module = ep.load()
        except Exception as err:  # a broken plugin must not take the server down unnamed
            if not required:
                # A backend only matters if selected; then this is the reason to give.
                self.import_errors[name] = f"{type(err).__name__}: {err}"
                return
            raise PluginError(
                f"plugin {name!r}: import failed: {type(err).__name__}: {err}"
            ) from None
        self._pm_register(module, name)
        self.infos[name] = PluginInfo(name, _version(ep), True, group)

    def _pm_register(self, obj: Any, name: str) -> None:
        # pluggy checks each hookimpl's arguments against its spec here.
        try:
            self.pm.register(self._adapted(obj, name), name=name)
        except pluggy.PluginValidationError as err:
            raise PluginError(f"plugin {name!r}: {_one_line(err)}") from None

    def _adapted(self, obj: Any, name: str) -> Any:
        """What pluggy registers for ``obj``: its hook implementations, adapted.

        Same names, signatures and hookimpl options (wrapper, tryfirst, ...);
        each resolves :class:`PerPlugin` arguments for plugin ``name``.
        """
        proxy = types.SimpleNamespace(__name__=getattr(obj, "__name__", name), plugin=obj)
        for attr in dir(obj):
            opts = self.pm.parse_hookimpl_opts(obj, attr)
            if opts is None:
                continue
            hook = opts.get("specname") or attr
            function = _adapt(getattr(obj, attr), name, hook)
            setattr(function, f"{self.pm.project_name}_impl", dict(opts))
            setattr(proxy, attr, function)
        return proxy

    def _check_hooks(self) -> None:
        # A typo in a hook name must fail loudly, not silently never run.
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            name = self.pm.get_name(err.plugin) or "?"
            raise PluginError(f"plugin {name!r}: {_one_line(err)}") from None

    def _configure(self) -> None:
        def table_of(name: str) -> Any:
            return self.config.plugins.settings.get(name, {})

        def keep(name: str, result: Any) -> None:
            self.settings[name] = result

        try:
            self.pm.hook.configure(settings=PerPlugin(table_of, keep), config=self.config)
        except (PluginConfigError, ValueError, TypeError) as err:
            name = getattr(err, FAILING_PLUGIN_ATTR, "?")
            raise PluginError(f"plugin {name!r}: invalid [plugins.{name}]: {err}") from None
        for name in self.config.plugins.settings:
            if name not in self.infos:
                raise PluginError(f"plugin {name!r}: [plugins.{name}] given but not enabled")

    def settings_for(self, name: str) -> Any:
        """A plugin's settings: what its ``configure`` returned, else its raw table."""
        configured = self.settings.get(name)
        if configured is not None:
            return configured
        return self.config.plugins.settings.get(name, {})

    def call_per_plugin(self, hook_name: str, make_register: Callable[[str], Any]) -> None:
        """Call a register-callback hook; each plugin gets its own ``register`` and settings."""
        self._results_per_plugin(hook_name, register=PerPlugin(make_register), config=self.config)

    def _results_per_plugin(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook through pluggy; its results (values or awaitables), in call order.

        Each implementation gets its own plugin's settings, so a policy hook
        (authorize, follows) reads its own config without module-level state:
        one process may hold several apps with different configs (tests).
        """
        caller = getattr(self.pm.hook, hook_name)
        if caller.spec is not None and "settings" in caller.spec.argnames:
            kwargs.setdefault("settings", PerPlugin(self.settings_for))
        results: list[Any] = caller(**kwargs)
        return results

    # --- registries built from hooks ----------------------------------------------

    def backends(self) -> dict[str, BackendFactory]:
        found: dict[str, tuple[str, BackendFactory]] = {}

        def make_register(plugin: str) -> Callable[[str, BackendFactory], None]:
            def register(name: str, factory: BackendFactory) -> None:
                if name in found:
                    first, second = _by_name(found[name][0], plugin)
                    raise PluginError(
                        f"presence backend {name!r} registered by both {first!r} and {second!r}"
                    )
                found[name] = (plugin, factory)

            return register

        self._results_per_plugin("register_backends", register=PerPlugin(make_register))
        return {name: factory for name, (_plugin, factory) in found.items()}

    def namespaces(self) -> dict[str, tuple[str, type]]:
        """path -> (plugin name, namespace class)."""
        from .namespace import BaseNamespace

        found: dict[str, tuple[str, type]] = {}

        def make_register(plugin: str) -> Callable[[str, type], None]:
            def register(path: str, namespace_class: type) -> None:
                if not path.startswith("/"):
                    raise PluginError(f"plugin {plugin!r}: namespace {path!r} must start with /")
                if not (
                    isinstance(namespace_class, type) and issubclass(namespace_class, BaseNamespace)
                ):
                    raise PluginError(
                        f"plugin {plugin!r}: namespace {path} must subclass BaseNamespace"
                    )
                if path in found:
                    first, second = _by_name(found[path][0], plugin)
                    raise PluginError(f"namespace {path} claimed by both {first!r} and {second!r}")
                found[path] = (plugin, namespace_class)
                self.infos[plugin].namespaces.append(path)

            return register

        self.call_per_plugin("register_namespaces", make_register)
        return found

    def build_namespace(self, plugin: str, namespace_class: type, path: str, gateway: Any) -> Any:
        """Instantiate a registered namespace; a bad schema in its ``__init__`` stops start-up.

        A ``TypeError``/``ValueError`` there (e.g. a validation field with a
        wrong option) becomes one line naming the plugin and the namespace.
        """
        try:
            return namespace_class(path, gateway, self.settings.get(plugin))
        except (TypeError, ValueError) as err:
            raise PluginError(f"plugin {plugin!r}: namespace {path}: {err}") from None

    def blueprints(self) -> list[Any]:
        found: list[Any] = []

        def make_register(plugin: str) -> Callable[[Any], None]:
            def register(blueprint: Any) -> None:
                found.append(blueprint)
                # Private: sanic/mixins/routes.py RouteMixin keeps a blueprint's
                # routes in _future_routes until it is registered on an app
                # (tests/test_upstream_overrides.py checks it).
                for route in blueprint._future_routes:
                    uri = (blueprint.url_prefix or "") + route.uri
                    self.infos[plugin].routes.append(f"{','.join(route.methods)} {uri}")

            return register

        self.call_per_plugin("register_routes", make_register)
        return found

    # --- runtime hooks ------------------------------------------------------------

    async def authorize(self, user: Any, namespace: str, action: str, resource: Any) -> bool:
        """Any plugin's ``False`` wins (every answer is awaited: none is left pending)."""
        allowed = True
        for result in self._results_per_plugin(
            "authorize", user=user, namespace=namespace, action=action, resource=resource
        ):
            if await await_me_maybe(result) is False:
                allowed = False
        return allowed

    async def allowed_ids(self, user: Any, namespace: str, action: str, ids: list[str]) -> set[str]:
        """The ids of ``ids`` every plugin's ``authorize`` allows ``action`` on.

        The hook gets the whole list as ``resource`` and answers for all of it
        (``True``/``None``: allow, ``False``: deny) or with a collection of the
        allowed ids (any other id is denied). Answers combine as an intersection.
        """
        allowed = set(ids)
        for result in self._results_per_plugin(
            "authorize", user=user, namespace=namespace, action=action, resource=list(ids)
        ):
            answer = await await_me_maybe(result)
            if answer is False:
                return set()
            if answer is not None and answer is not True:
                allowed.intersection_update(str(i) for i in answer)
        return allowed

    async def follows(self, user: Any, namespace: str, claims: dict[str, Any]) -> set[str]:
        followed: set[str] = set()
        for result in self._results_per_plugin(
            "follows", user=user, namespace=namespace, claims=claims
        ):
            ids = await await_me_maybe(result)
            if ids:
                followed.update(str(i) for i in ids)
        return followed

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a hook whose results are not used; await each implementation in turn."""
        for result in self._results_per_plugin(hook_name, **kwargs):
            await await_me_maybe(result)


def _by_name(one: str, other: str) -> tuple[str, str]:
    # Hooks run in pluggy's order (last registered first); name a clash the same way always.
    first, second = sorted((one, other))
    return first, second


def plugin_listing(config: Config) -> list[PluginInfo]:
    """Every discovered plugin, enabled or not, for ``sanic-rt plugins``."""
    host = PluginHost(config)
    host.load()
    host.namespaces()
    host.blueprints()
    for name, ep in discover(PLUGIN_GROUP).items():
        if name not in host.infos:
            host.infos[name] = _probe_disabled(config, name, ep)
    return sorted(host.infos.values(), key=lambda p: (p.group, p.name))


def _probe_disabled(config: Config, name: str, ep: Any) -> PluginInfo:
    """What a disabled plugin would add, from a throwaway host that enables only it."""
    plugins = replace(config.plugins, enabled=[name], settings={})
    probe = PluginHost(config.replace(plugins=plugins))
    try:
        probe.load()
        probe.namespaces()
        probe.blueprints()
    except PluginError as err:
        info = PluginInfo(name, _version(ep), False, PLUGIN_GROUP)
        info.error = str(err)
        return info
    info = probe.infos[name]
    info.enabled = False
    return info
