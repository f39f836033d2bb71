"""The official socket.io-client under node, driven line by line (tests/js/recover.js)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent.parent / "js"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
    reason="node and socket.io-client are needed (make js-deps)",
)


class JsClient:
    """One ``node recover.js URL TOKEN``: its JSON lines in ``lines``, commands via ``send``."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, url: str, token: str) -> JsClient:
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            "recover.js",
            url,
            token,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    async def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    def seen(self, event: str, nsp: str | None = None) -> list[dict[str, Any]]:
        return [x for x in self.lines if x["event"] == event and nsp in (None, x.get("nsp"))]

    def event_args(self, event: str, nsp: str) -> list[list[Any]]:
        return [x["args"] for x in self.seen(event, nsp)]

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send("exit")
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
