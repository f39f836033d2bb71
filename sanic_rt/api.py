"""The public plugin API: everything a plugin or backend author imports, from one place.

Import from here (or from ``sanic_rt``, which re-exports the same names)::

    from sanic_rt.api import AckError, BaseNamespace, Id, hookimpl, validate

Names not listed in ``__all__`` (and modules other than this one and
``sanic_rt.testing``) are internals: they may change in any release.
"""

from __future__ import annotations

from . import testing
from .auth import AuthenticatedUser
from .backend import (
    BackendFactory,
    BackendUnavailable,
    ConnectResult,
    DisconnectResult,
    PresenceBackend,
    PresenceStats,
    TouchResult,
)
from .config import Config, ConfigError
from .envelope import ERROR_CODES, AckError
from .gateway import Gateway, presence_room, user_room
from .hookspecs import RegisterBackend, RegisterNamespace, RegisterRoutes, hookimpl
from .http_api import (
    API_PREFIX,
    envelope,
    gateway_of,
    json_body,
    namespace_of,
    push_to_users,
    require_api_key,
)
from .namespace import BaseNamespace
from .plugin_manager import PluginConfigError
from .presence import Presence, TooManyConnections
from .presence_model import STATUSES, Connection, PresenceRecord, PublicView, Timings
from .validation import (
    Bool,
    Choice,
    Field,
    Id,
    IdList,
    Int,
    Json,
    Text,
    validate,
    validate_settings,
)

__all__ = [
    "API_PREFIX",
    "ERROR_CODES",
    "STATUSES",
    "AckError",
    "AuthenticatedUser",
    "BackendFactory",
    "BackendUnavailable",
    "BaseNamespace",
    "Bool",
    "Choice",
    "Config",
    "ConfigError",
    "ConnectResult",
    "Connection",
    "DisconnectResult",
    "Field",
    "Gateway",
    "Id",
    "IdList",
    "Int",
    "Json",
    "PluginConfigError",
    "Presence",
    "PresenceBackend",
    "PresenceRecord",
    "PresenceStats",
    "PublicView",
    "RegisterBackend",
    "RegisterNamespace",
    "RegisterRoutes",
    "Text",
    "Timings",
    "TooManyConnections",
    "TouchResult",
    "envelope",
    "gateway_of",
    "hookimpl",
    "json_body",
    "namespace_of",
    "presence_room",
    "push_to_users",
    "require_api_key",
    "testing",
    "user_room",
    "validate",
    "validate_settings",
]
