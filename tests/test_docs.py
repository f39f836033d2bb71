"""The docs keep up with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sanic_rt import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def hook_names() -> list[str]:
    return sorted(
        name
        for name in dir(hookspecs)
        if getattr(getattr(hookspecs, name), "sanic_rt_spec", None) is not None
    )


def test_there_are_hooks():
    assert "register_namespaces" in hook_names()


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_are_documented(hook):
    sections = re.findall(r"^## (\w+)\s*$", (DOCS / "plugins.md").read_text(), re.MULTILINE)
    assert hook in sections, f"docs/plugins.md has no '## {hook}' section"


REFERENCE = DOCS / "reference" / "index.rst"


def test_every_public_name_is_in_the_reference():
    from sanic_rt import api

    text = REFERENCE.read_text()
    missing = [n for n in api.__all__ if n != "testing" and f"sanic_rt.api.{n}" not in text]
    assert not missing, f"docs/reference/index.rst does not document {missing}"
    assert "automodule:: sanic_rt.testing" in text


def test_every_public_class_function_and_method_has_a_docstring():
    import inspect

    from sanic_rt import api

    undocumented = []
    for name in api.__all__:
        obj = getattr(api, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            undocumented.append(name)
        if not inspect.isclass(obj):
            continue
        for member in vars(obj):
            # on_<event> handlers are client events, documented in REALTIME_SOCKET_EVENTS.md.
            if member.startswith(("_", "on_")) or not callable(getattr(obj, member)):
                continue
            if not inspect.getdoc(getattr(obj, member)):
                undocumented.append(f"{name}.{member}")
    assert not undocumented, f"no docstring: {undocumented}"
