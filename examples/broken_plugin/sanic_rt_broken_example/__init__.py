"""Fails on import, as a plugin with a missing dependency does."""

import sanic_rt_missing_dependency  # noqa: F401
