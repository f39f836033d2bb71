"""What the conformance suite does not cover: the Redis backend's keys, scripts and failures."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from sanic_rt.backend import BackendUnavailable, PresenceBackend
from sanic_rt.config import ConfigError, load_config
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.presence_model import Connection, Timings
from tests.support.procs import Proc, redis_process, wait_until

T0 = 1_800_000_000.0
TIMINGS = Timings(ttl=10.0, offline_grace=5.0, idle_timeout=100.0)


@pytest.fixture
async def make_backend() -> AsyncIterator[Callable[..., PresenceBackend]]:
    made: list[PresenceBackend] = []

    def make(url: str, **redis_settings: Any) -> PresenceBackend:
        overrides = {"presence.backend": "redis", "presence.redis.url": url}
        overrides |= {f"presence.redis.{k}": v for k, v in redis_settings.items()}
        host = PluginHost(load_config(env={}, overrides=overrides))
        host.load()
        backend = host.backends()["redis"](host.config, TIMINGS)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


def url_of(proc: Proc) -> str:
    return f"redis://127.0.0.1:{proc.port}/0"


async def test_keys_of_a_shard_share_one_slot(redis_proc, make_backend):
    backend = make_backend(url_of(redis_proc), key_prefix="rt", index_shards=4)
    for i in range(40):
        await backend.connect(Connection(f"user{i}", f"s{i}", "/chats", "", "node1"), T0, 5)
    await backend.disconnect("user0", "s0", T0)
    keys = redis.Redis(port=redis_proc.port).keys("*")
    # A hash per user; online, due, ns and node1's user set per shard.
    assert len(keys) == 40 + 4 * 4
    slots: dict[bytes, set[int]] = {}
    for key in keys:
        assert key.startswith(b"rt:{rt:")
        tag = key[key.index(b"{") : key.index(b"}") + 1]
        slots.setdefault(tag, set()).add(key_slot(key))
    assert len(slots) == 4 and all(len(s) == 1 for s in slots.values())


async def test_entries_written_before_node_ids_are_read(redis_proc, make_backend):
    backend = make_backend(url_of(redis_proc), index_shards=1)
    await backend.connect(Connection("u1", "s1", "/chats", "phone", "n1"), T0, 5)
    key = backend.user_key("u1")
    client = redis.Redis(port=redis_proc.port)
    assert client.hget(key, "c:s1") == b"1800000010|6,2|/chatsn1phone"
    client.hset(key, "c:s0", "1800000010|7|/ordersweb")  # the old form: no node
    record = (await backend.get_many(["u1"], T0))["u1"]
    assert record.connections == 2 and record.namespaces == ("/chats", "/orders")
    assert record.devices == ("phone", "web")
    # The script reads it too: the node's users are settled, the old entry stays.
    assert (await backend.settle_nodes(["n1"], T0 + 1, 10)).changes == []
    record = (await backend.get_many(["u1"], T0 + 1))["u1"]
    assert record.sids == (("s0", "/orders"),)


async def test_script_is_reloaded_after_a_flush(redis_proc, make_backend):
    backend = make_backend(url_of(redis_proc), index_shards=4)
    conns = [Connection(f"u{i}", f"s{i}", "/chats") for i in range(8)]
    await backend.connect(conns[0], T0, 5)
    client = redis.Redis(port=redis_proc.port)
    client.script_flush()
    # A single call (EVALSHA then load) and a pipelined one (several shards).
    assert (await backend.connect(conns[1], T0, 5)).accepted
    client.script_flush()
    result = await backend.touch(conns, T0 + 1, activity=False)
    assert len(result.statuses) == 8 and await backend.online_count() == 8


async def test_unix_socket_url(tmp_path: Path, make_backend):
    sock = tmp_path / "redis.sock"
    proc = redis_process(tmp_path)
    proc.argv += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    proc.start()
    try:
        wait_until(sock.exists)
        backend = make_backend(f"unix://{sock}?db=0")
        await backend.check()
        assert (await backend.connect(Connection("u1", "s1", "/chats"), T0, 5)).accepted
        assert (await backend.get_many(["u1"], T0))["u1"].online
    finally:
        proc.stop()


async def test_stalled_redis_answers_unavailable_within_the_timeout(redis_proc, make_backend):
    backend = make_backend(url_of(redis_proc), timeout=0.3, connect_timeout=0.3)
    await backend.connect(Connection("u1", "s1", "/chats"), T0, 5)
    redis_proc.signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        calls = [
            backend.check(),
            backend.connect(Connection("u2", "s2", "/chats"), T0, 5),
            backend.touch([Connection("u1", "s1", "/chats")], T0, activity=True),
            backend.sweep(T0, 100),
            backend.get_many(["u1"], T0),
            backend.stats(T0),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call
            assert time.monotonic() - started < 0.3 + 0.3 + 0.5
    finally:
        redis_proc.signal(signal.SIGCONT)

    async def answers() -> bool:
        try:
            await backend.check()
        except BackendUnavailable:
            return False
        return True

    deadline = time.monotonic() + 5
    while not await answers():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await backend.get_many(["u1"], T0))["u1"].online


async def test_refused_connection_fails_at_once(tmp_path: Path, make_backend):
    backend = make_backend(url_of(redis_process(tmp_path)))  # nothing listens there
    await backend.start()  # no I/O: the server starts while Redis is down
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await backend.connect(Connection("u1", "s1", "/chats"), T0, 5)
    assert time.monotonic() - started < 0.5


def test_brace_in_key_prefix_is_refused(make_backend):
    with pytest.raises(ConfigError, match=r"presence\.redis\.key_prefix"):
        make_backend("redis://127.0.0.1:1/0", key_prefix="a{b}")


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    argv = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    argv += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return cert, key


async def test_tls_url(tmp_path: Path, tls_cert: tuple[Path, Path], make_backend):
    cert, key = tls_cert
    proc = redis_process(tmp_path)
    port = proc.port
    # TLS only: the plain port is turned off, the TLS one is the fixture's port.
    proc.argv[proc.argv.index("--port") + 1] = "0"
    proc.argv += ["--tls-port", str(port), "--tls-cert-file", str(cert)]
    proc.argv += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    proc.argv += ["--tls-auth-clients", "no"]
    proc.start()
    try:
        backend = make_backend(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
        await backend.check()
        assert (await backend.connect(Connection("u1", "s1", "/chats"), T0, 5)).accepted
        assert await backend.online_count() == 1
    finally:
        proc.stop()
