"""``sanic-rt token``, the dev key, and production-mode refusals, through the real CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import base_config
from tests.support.clients import SECRET
from tests.support.procs import HOST, Proc, _http_ok, free_port, write_toml
from tests.support.tokens import write_keypair


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sanic_rt", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def config_path(server: Proc) -> str:
    return server.argv[server.argv.index("--config") + 1]


async def assert_connects(clients, url: str, token: str, namespace: str = "/") -> None:
    client = await clients(url, token, namespaces=[namespace])
    ack = await client.call("ping", {}, namespace=namespace)
    assert ack == {"ok": True, "data": {"status": "online"}}


async def test_token_with_hs_config_and_json_claims(start_server, clients) -> None:
    server = start_server()
    args = ["token", "alice", "--config", config_path(server), "--ttl", "120"]
    args += ["--claim", 'conversations=["c1"]', "--claim", "plan=pro", "--claim", "n=3"]
    args += ["--claim", 'friends={"a": 1}']
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["conversations"] == ["c1"]
    assert claims["plan"] == "pro" and claims["n"] == 3 and claims["friends"] == {"a": 1}
    assert 119 <= claims["exp"] - claims["iat"] <= 120
    await assert_connects(clients, server.url, token, "/chats")


async def test_token_with_rs256_private_key(start_server, clients, tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path)
    server = start_server(
        base_config(auth={"secret": "", "algorithms": ["RS256"], "public_key_file": str(public)})
    )
    done = cli("token", "rsa-bob", "--config", config_path(server), "--private-key", str(private))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    await assert_connects(clients, server.url, token)
    # Without the private key there is no HS* key to sign with.
    done = cli("token", "rsa-bob", "--config", config_path(server))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--claim", "no-equals-sign"],
        ["--private-key", "/nonexistent/key.pem"],
    ],
)
def test_token_usage_errors_exit_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    done = cli("token", "alice", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_private_key_that_is_not_a_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    config = write_toml(tmp_path / "c.toml", base_config(auth={"algorithms": ["RS256"]}))
    done = cli("token", "alice", "--config", str(config), "--private-key", str(bad))
    assert done.returncode == 2 and "PEM" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_token_without_a_dev_server_refuses_and_makes_no_key(tmp_path: Path) -> None:
    # A new key would sign tokens that the dev server (with its own key) refuses.
    done = cli("token", "alice", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no dev key" in lines[0] and "sanic-rt serve" in lines[0]
    assert not (tmp_path / ".sanic-rt").exists()


async def test_dev_mode_serve_and_token_share_the_key(tmp_path: Path, clients) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "sanic_rt", "serve", "--port", str(port)]
    server = Proc(argv, port, tmp_path, "dev", env=clean_env(), ready=lambda: _http_ok(port))
    server.start()
    try:
        key_file = tmp_path / ".sanic-rt" / "dev.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text()
        assert "sanic-rt token alice" in server.log()  # how to connect, printed at start
        done = cli("token", "alice", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        await assert_connects(clients, f"http://{HOST}:{port}", done.stdout.strip(), "/chats")
        assert key_file.read_text() == key
        # From a directory below the server's, the token finds the same key.
        below = tmp_path / "src" / "app"
        below.mkdir(parents=True)
        done = cli("token", "bob", cwd=below)
        assert done.returncode == 0, done.stderr
        assert jwt.decode(done.stdout.strip(), key.strip(), algorithms=["HS256"])["sub"] == "bob"
        await assert_connects(clients, f"http://{HOST}:{port}", done.stdout.strip(), "/chats")
        assert not (below / ".sanic-rt").exists()
    finally:
        server.stop()


PRODUCTION_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "no explicit key": ({"auth": {"secret": ""}}, "auth.secret: production mode needs"),
    "short secret": ({"auth": {"secret": "s" * 31}}, "auth.secret: production needs an HS*"),
    "short secret_file": ({"auth": {"secret": "", "secret_file": "SHORT"}}, "auth.secret:"),
    "empty secret_file": ({"auth": {"secret": "", "secret_file": "EMPTY"}}, "auth.secret:"),
    "cors *": ({"server": {"cors_allowed_origins": ["*"]}}, "server.cors_allowed_origins"),
}


def production_config(tmp_path: Path, change: dict[str, Any]) -> Path:
    (tmp_path / "short.secret").write_text("s" * 31 + "\n")
    (tmp_path / "empty.secret").write_text("\n")
    files = {"SHORT": str(tmp_path / "short.secret"), "EMPTY": str(tmp_path / "empty.secret")}
    data = base_config(server={"mode": "production", "host": HOST, "port": free_port()})
    for section, table in change.items():
        table = {k: files.get(v, v) if isinstance(v, str) else v for k, v in table.items()}
        data[section] = {**data[section], **table}
    return write_toml(tmp_path / "production.toml", data)


@pytest.mark.parametrize("case", list(PRODUCTION_REFUSALS))
def test_production_refusals_exit_2_with_one_line(case: str, tmp_path: Path) -> None:
    change, expected = PRODUCTION_REFUSALS[case]
    path = production_config(tmp_path, change)
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (command, done.stderr)
        assert str(path) in lines[0]
    assert not (tmp_path / ".sanic-rt").exists()  # production never makes a dev key


def test_production_with_a_long_secret_passes_and_masks_it(tmp_path: Path) -> None:
    path = production_config(tmp_path, {})
    done = cli("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
