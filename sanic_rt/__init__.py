"""sanic-rt: a real-time gateway on Sanic and python-socketio.

The public plugin API lives in :mod:`sanic_rt.api`; every name there is
re-exported here too (``from sanic_rt import BaseNamespace, hookimpl``).
"""

# ruff: noqa: F403 - the star import is the public API, listed in api.__all__
from . import api
from .api import *
from .app import create_app
from .config import load_config
from .hosting import attach

__all__ = [*api.__all__, "api", "attach", "create_app", "load_config"]
__version__ = "0.1.0"
