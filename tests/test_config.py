"""Config: TOML + env overrides into frozen dataclasses; bad config exits 2 with one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sanic_rt.config import ConfigError, documented_keys, load_config, masked

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_example_config_loads_and_documents_every_key():
    config = load_config(ROOT / "config.example.toml", env={})
    assert config.server.mode == "dev"
    text = (ROOT / "config.example.toml").read_text()
    current = ""
    found: set[str] = set()
    for line in text.splitlines():
        if m := re.match(r"^\[([\w.]+)\]", line):
            current = m.group(1)
        elif m := re.match(r"^#?\s*(\w+) = ", line):
            found.add(f"{current}.{m.group(1)}")
    missing = [key for key, _default, _doc in documented_keys() if key not in found]
    assert missing == []


def test_env_overrides_nested_keys(tmp_path):
    path = write(tmp_path, '[server]\nmode = "dev"\nport = 9000\n')
    env = {
        "SANIC_RT_PRESENCE__BACKEND": "redis",
        "SANIC_RT_SERVER__PORT": "9100",
        "SANIC_RT_PRESENCE__REDIS__URL": "redis://10.0.0.5:6379/1",
        "SANIC_RT_SERVER__TRANSPORTS": '["websocket"]',
        "UNRELATED": "x",
    }
    config = load_config(path, env=env)
    assert config.presence.backend == "redis"
    assert config.server.port == 9100
    assert config.presence.redis.url == "redis://10.0.0.5:6379/1"
    assert config.server.transports == ["websocket"]


def test_config_is_frozen():
    config = load_config(env={})
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[server]\nmode = "dev"\nprot = 1\n', "server.prot", "unknown key"),
        ('[server]\nmode = "dev"\nport = "80"\n', "server.port", "expected int"),
        ('[server]\nmode = "dev"\nport = 70000\n', "server.port", "between 0 and 65535"),
        ('[server]\nmode = "staging"\n', "server.mode", "expected one of"),
        ("[server]\nport = 1\n", "server.mode", "required"),
        ('[server]\nmode = "dev"\n[presence]\nttl = -1\n', "presence.ttl", ">= 1"),
        ('[server]\nmode = "dev"\n[auth]\nalgorithms = "HS256"\n', "auth.algorithms", "list"),
        ('[server]\nmode = "dev"\n[nope]\n', "nope", "unknown section"),
        ('[server]\nmode = "dev"\n[presence.redis]\nurl = 5\n', "presence.redis.url", "str"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and key in message and expected in message


def test_invalid_toml_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[server\n"), env={})
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.toml", env={})


def test_masked_hides_secrets_but_keeps_hosts():
    config = load_config(
        env={},
        overrides={
            "auth.secret": "s3cret-value",
            "api.keys": ["k1", "k2"],
            "presence.redis.url": "redis://user:pw@redis.example:6379/0",
        },
    )
    shown = masked(config)
    assert shown["auth"]["secret"] == "***"
    assert shown["api"]["keys"] == ["***", "***"]
    assert shown["presence"]["redis"]["url"] == "redis://***@redis.example:6379/0"
    assert "s3cret-value" not in repr(shown)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sanic_rt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "text",
    [
        '[server]\nmode = "dev"\nworkers = "two"\n',
        "not = [valid\n",
        '[server]\nmode = "dev"\n[presence]\nbackend = "nosuch"\n',
        '[server]\nmode = "dev"\nworkers = 2\n',
        '[server]\nmode = "dev"\n[cluster]\nmanager = "memcached"\n',
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path, text):
    path = write(tmp_path, text)
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_check_config_prints_effective_config_masked(tmp_path):
    path = write(tmp_path, '[server]\nmode = "dev"\n[auth]\nsecret = "abc-secret-123"\n')
    result = run_cli("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"secret": "***"' in result.stdout and "abc-secret-123" not in result.stdout


def test_env_values_keep_the_type_their_key_wants(tmp_path):
    env = {
        "SANIC_RT_AUTH__SECRET": "2024-01-01",
        "SANIC_RT_API__KEYS_FILE": "0123",
        "SANIC_RT_SERVER__PORT": "9100",
        "SANIC_RT_PLUGINS__ENABLED": '["chats"]',
    }
    config = load_config(env=env)
    assert config.auth.secret == "2024-01-01" and config.api.keys_file == "0123"
    assert config.server.port == 9100 and config.plugins.enabled == ["chats"]
    with pytest.raises(ConfigError, match=r"SANIC_RT_SERVER__PORT: expected int"):
        load_config(env={"SANIC_RT_SERVER__PORT": "eighty"})


def test_a_non_table_section_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="server: expected a table"):
        load_config(write(tmp_path, "server = 1\n"), env={})
