"""bench/README.md describes every section `make bench` runs, numbered in the order it runs them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_readme_lists_every_section_in_order():
    tree = ast.parse((ROOT / "bench" / "__main__.py").read_text())
    (sections,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "SECTIONS" for t in node.targets)
    ]
    readme = (ROOT / "bench" / "README.md").read_text()
    listed = re.findall(r"(?m)^(\S+)\. \*\*([^*]+)\*\*", readme)
    assert listed == [(str(n), name) for n, name in enumerate(sections, 1)], listed
