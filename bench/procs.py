"""Child processes for the bench: pinned to a core, measured with psutil, always stopped.

Small copies of tests/support/procs.py's helpers, plus CPU pinning and sampling;
the bench must not depend on the test tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"
SERVER_CORE = 0
LOAD_CORE = 1


def cores() -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): one each on two or more cores, shared on one."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[SERVER_CORE]}, {available[LOAD_CORE]}


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE to ``wanted`` (the hard limit too, where allowed).

    Children inherit it: a server or a load generator holding 10,000 sockets needs more
    descriptors than a default soft limit of 1,024. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if hard != unlimited and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    goal = wanted if hard == unlimited else min(hard, wanted)
    if soft != unlimited and soft < goal:
        resource.setrlimit(resource.RLIMIT_NOFILE, (goal, hard))
        soft = goal
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


class Proc:
    """One child process: started pinned to ``cpus``, sampled, stopped (SIGKILL as last resort)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        cpus: set[int],
        port: int | None = None,
        env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> None:
        self.name, self.argv, self.workdir, self.cpus, self.port = name, argv, workdir, cpus, port
        self.env = env
        self.stdin = stdin
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.log_path = workdir / f"{name}.log"
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, ready_timeout: float = 20.0, capture: bool = False) -> Proc:
        cpus = self.cpus
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                env=self.env,
                # Pinned before exec, so that no thread the child starts escapes the core.
                preexec_fn=lambda: os.sched_setaffinity(0, cpus),
            )
        self.ps = psutil.Process(self.proc.pid)
        if capture:
            threading.Thread(target=self._read, daemon=True).start()
        if self.port is not None:
            deadline = time.monotonic() + ready_timeout
            while not port_open(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not listening after {ready_timeout}s")
                time.sleep(0.05)
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def message(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child printed; raises on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no report within {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            line = line.strip()
            if line.startswith("{"):
                msg = json.loads(line)
                if msg.get("event") == "error":
                    raise RuntimeError(f"{self.name}: {msg['message']}")
                return msg

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        notes = []
        while True:
            msg = self.message(timeout)
            if msg["event"] == event:
                if notes:
                    msg["notes"] = notes
                return msg
            if msg["event"] == "note":
                notes.append(msg["message"])

    def send(self, line: str) -> None:
        if self.proc and self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()

    def tail(self, chars: int = 2000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process and its children so far."""
        assert self.ps is not None
        with self.ps.oneshot():
            t = self.ps.cpu_times()
            return t.user + t.system + t.children_user + t.children_system

    def rss(self) -> int:
        assert self.ps is not None
        return self.ps.memory_info().rss

    def wait(self, timeout: float) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def running(proc: Proc, **start: Any) -> Iterator[Proc]:
    """Start ``proc`` and stop it however the block ends."""
    try:
        yield proc.start(**start)
    finally:
        proc.stop()


def redis_proc(workdir: Path, cpus: set[int]) -> Proc | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir), "--protected-mode", "no"]
    return Proc(f"redis-{port}", argv, workdir, cpus, port=port)


def memcached_proc(workdir: Path, cpus: set[int]) -> Proc | None:
    exe = shutil.which("memcached")
    if exe is None:
        return None
    port = free_port()
    argv = [exe, "-l", HOST, "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return Proc(f"memcached-{port}", argv, workdir, cpus, port=port)


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
