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
