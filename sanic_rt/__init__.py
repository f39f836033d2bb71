"""sanic-rt: a real-time gateway on Sanic and python-socketio.

The public plugin API lives in :mod:`sanic_rt.api`; every name there is
re-exported here too (``from sanic_rt import BaseNamespace, hookimpl``).
"""

# ruff: noqa: F403, F405 - the star import is the public API, listed in api.__all__
from . import api
from .api import *
from .app import create_app
from .config import load_config

# api.__all__ plus the app factory (a test keeps the two lists in step).
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
    "api",
    "create_app",
    "envelope",
    "gateway_of",
    "hookimpl",
    "json_body",
    "load_config",
    "namespace_of",
    "presence_room",
    "push_to_users",
    "require_api_key",
    "testing",
    "user_room",
    "validate",
    "validate_settings",
]
__version__ = "0.1.0"
