"""Sphinx configuration of the Plugin API reference (``make docs``).

The reference is generated from the docstrings of ``sanic_rt.api``; the build
runs with warnings as errors, so a broken reference fails ``make test``.
"""

project = "sanic-rt"
author = "sanic-rt contributors"
extensions = ["sphinx.ext.autodoc"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
# Annotations name types from packages we do not document (sanic, socketio).
autodoc_type_aliases: dict[str, str] = {}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
