"""docs/plugins.md runs: every code block, exactly as written, in a fresh package.

Blocks are ``{file=PATH}`` (written to the package; several blocks for one
path are joined in order, two blank lines apart) or ``{run}`` (``$ command``
lines run in the package directory; the other lines are output that must
appear). The package gets its
own virtual environment that sees this one's packages (so nothing is
downloaded) but installs into itself: its entry point does not leak into the
environment the rest of the suite runs in.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str, str]]:
    """(language, attributes, body) of every fenced block of the page."""
    return [(m[1], m[2].strip(), m[3]) for m in FENCE.finditer(DOC.read_text())]


def test_every_block_is_a_file_or_a_run():
    found = blocks()
    assert len(found) >= 8
    for language, attributes, _body in found:
        assert re.fullmatch(r"\{file=[\w./-]+\}|\{run\}", attributes), (language, attributes)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An empty package directory and the environment of its own venv."""
    root = tmp_path_factory.mktemp("walkthrough")
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    # Our packages (pip, setuptools, sanic-rt and its editable finder) are visible.
    ours = sysconfig.get_paths()["purelib"]
    (site / "our-venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANIC_RT_", "PYTHON"))}
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        "VIRTUAL_ENV": str(venv),
        # Offline and quick: everything needed is already installed.
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    directory = root / "support-desk"
    directory.mkdir()
    return directory, env


def run_block(body: str, cwd: Path, env: dict[str, str]) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif line.strip():
            commands[-1][1].append(line)
    for command, expected in commands:
        done = subprocess.run(
            shlex.split(command),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"$ {command}\n{output}"
        lines = output.splitlines()
        for line in expected:
            assert line in lines, f"$ {command}: no line {line!r} in\n{output}"


def test_the_walkthrough_runs_as_written(package):
    directory, env = package
    written: set[Path] = set()
    for _language, attributes, body in blocks():
        if attributes == "{run}":
            run_block(body, directory, env)
            continue
        path = directory / attributes.removeprefix("{file=").removesuffix("}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if path in written else "w") as out:
            out.write("\n\n" + body if path in written else body)  # two blank lines between
        written.add(path)
    # The page's own tests ran (the last {run}); they were found and passed.
    assert (directory / "tests" / "test_support_desk.py").exists()
