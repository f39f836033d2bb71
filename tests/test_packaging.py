"""A wheel install (not only the editable one) carries the core, backends and plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_backends_and_plugins_as_subpackages(tmp_path):
    pip = [sys.executable, "-m", "pip", "-q"]
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build_args = ["wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir)]
    build = subprocess.run(
        [sys.executable, "-m", "pip", *build_args, str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # e.g. setuptools' "`project.license` as a TOML table is deprecated"
    assert "deprecated" not in (build.stdout + build.stderr).lower()
    (wheel,) = wheel_dir.glob("sanic_rt-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert not (target / "backends").exists() and not (target / "plugins").exists()
    assert (target / "sanic_rt" / "py.typed").exists()  # type checkers read our hints
    probe = (
        "import sanic_rt, sanic_rt.backends.redis as r, sanic_rt.plugins.chats as c;"
        "import sanic_rt.backends.memcached, sanic_rt.plugins.socials;"
        "print(sanic_rt.__file__); print(len(r.SCRIPT) > 0, c.PATH)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(target)) and out[1] == "True /chats"
    # The operator pages work from the wheel alone: dashboard and vendored Admin UI.
    static = target / "sanic_rt" / "static"
    for name in ("dashboard/index.html", "dashboard/socket.io.min.js", "admin-ui/index.html"):
        assert (static / name).is_file(), name
    assert list((static / "admin-ui" / "js").glob("app.*.js"))


def test_redis_py_parses_replies_with_hiredis():
    # Installed through the redis[hiredis] requirement: redis-py's pure-Python reply
    # parser was ~40% of the server's CPU per Redis heartbeat (docs/performance.md).
    from redis.asyncio.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert DefaultParser.__name__ == "_AsyncHiredisParser"
