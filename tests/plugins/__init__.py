"""Helpers shared by the plugin tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.procs import write_toml


def start_failure(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run ``sanic-rt serve`` with ``config``, expecting it to stop at start-up.

    Returns (exit status, stderr lines). A server that starts would bind a port
    and not exit: the timeout turns that into a failure.
    """
    path = write_toml(tmp_path / "failing.toml", {**config, "server": {"mode": "dev", "port": 0}})
    base = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    return proc.returncode, proc.stderr.strip().splitlines()
