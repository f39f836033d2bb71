"""Real redis-server, memcached and sanic-rt processes on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sanic_rt.testing import to_toml

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


class Proc:
    """A child process we can stop, kill with SIGKILL, and start again on the same port."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        cwd: Path,
        name: str,
        env: dict | None = None,
        ready: Callable[[], bool] | None = None,
    ):
        self.argv, self.port, self.cwd, self.name = argv, port, cwd, name
        self.env = env
        self.ready = ready or (lambda: _port_open(port))
        self.url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = cwd / f"{name}-{port}.log"

    def start(self, timeout: float = 20.0) -> Proc:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            return self.ready()

        wait_until(up, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def redis_process(tmp: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (make test installs it)"
    argv = [
        exe,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp),
        "--protected-mode",
        "no",
    ]
    return Proc(argv, port, tmp, "redis")


def memcached_process(tmp: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    exe = shutil.which("memcached")
    assert exe, "memcached is not installed (make test installs it)"
    argv = [exe, "-l", HOST, "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return Proc(argv, port, tmp, "memcached")


def _http_ok(port: int, path: str = "/health") -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data))
    return path


def server_process(
    tmp: Path, config: dict[str, Any], port: int | None = None, extra_args: list[str] = ()
) -> Proc:
    """The real server through its CLI, with ``config`` written as TOML."""
    port = port or free_port()
    config = {
        **config,
        "server": {"mode": "dev", "host": HOST, **config.get("server", {}), "port": port},
    }
    path = write_toml(tmp / f"config-{port}.toml", config)
    argv = [sys.executable, "-m", "sanic_rt", "serve", "--config", str(path), *extra_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}
    return Proc(argv, port, tmp, "sanic-rt", env=env, ready=lambda: _http_ok(port))
