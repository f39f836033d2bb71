"""The README's client snippets, run as written against `sanic-rt serve` in dev mode."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.procs import Proc, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def snippet(language: str) -> str:
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    return code


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


async def test_readme_snippets_connect_to_the_dev_server(tmp_path):
    port = free_port()
    server = Proc(
        [sys.executable, "-m", "sanic_rt", "serve", "--port", str(port)], port, tmp_path, "dev"
    )
    server.start()
    try:
        token = run(
            [sys.executable, "-m", "sanic_rt", "token", "alice"], tmp_path, dict(os.environ)
        )
        assert token.returncode == 0, token.stderr
        env = {**os.environ, "TOKEN": token.stdout.strip(), "SANIC_RT_URL": server.url}
        env["NODE_PATH"] = str(ROOT / "tests" / "js" / "node_modules")
        (tmp_path / "client.py").write_text(snippet("python"))
        (tmp_path / "client.js").write_text(snippet("js"))
        py, js = await asyncio.gather(
            asyncio.to_thread(run, [sys.executable, "client.py"], tmp_path, env),
            asyncio.to_thread(run, ["node", "client.js"], tmp_path, env),
        )
        for result in (py, js):
            assert result.returncode == 0, result.stderr
            ping, _, bob = result.stdout.partition("bob:")
            assert ping.startswith("ping:") and "online" in ping, result.stdout
            assert "true" in ping.lower() and "offline" in bob, result.stdout
        assert "in-memory presence" in server.log()
    finally:
        server.stop()
        wait_until(lambda: not server.alive)
