"""Config refusals and masking through the real CLI: weak API keys, credentials in URLs,
errors that name the environment variable or the misspelled section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import base_config
from tests.support.cluster import check_config
from tests.support.procs import write_toml

STRONG_KEY = "an-api-key-of-more-than-16-chars"


def production(**sections: dict) -> dict:
    return base_config(server={"mode": "production"}, **sections)


def assert_refused(result: subprocess.CompletedProcess[str], key: str, reason: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and reason in lines[0], result.stderr


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (base_config(api={"keys": ["", STRONG_KEY]}), "empty"),
        (base_config(api={"keys": ["   "]}), "empty"),
        (production(api={"keys": [STRONG_KEY, "short-key"]}), ">= 16 characters"),
    ],
)
def test_empty_or_short_api_keys_are_refused(tmp_path: Path, config: dict, reason: str) -> None:
    assert_refused(check_config(tmp_path, config), "api.keys", reason)


def test_short_keys_from_the_keys_file_are_refused_in_production(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{STRONG_KEY}\nletmein\n")
    config = production(api={"keys_file": str(keys_file)})
    assert_refused(check_config(tmp_path, config), "api.keys_file", ">= 16 characters")
    keys_file.write_text(f"{STRONG_KEY}\n")
    assert check_config(tmp_path, config).returncode == 0
    # Dev mode takes a short key (a local experiment), never an empty one.
    assert check_config(tmp_path, base_config(api={"keys": ["dev"]})).returncode == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis://alice:hunter2-pw@redis.example:6379/0",
        "redis://:hunter2-pw@redis.example:6379/0",
        "redis://hunter2-pw@redis.example:6379/0",
        "redis://redis.example:6379/0?password=hunter2-pw",
        "redis://redis.example:6379/0?db=1&username=hunter2-pw&password=hunter2-pw",
        "redis://redis.example:6379/0?pass%77ord=hunter2-pw",
        "rediss://redis.example:6380/0?ssl_password=hunter2-pw",
        "unix://hunter2-pw@/var/run/redis.sock?db=0&password=hunter2-pw",
    ],
)
def test_check_config_masks_every_credential_form(tmp_path: Path, url: str) -> None:
    config = base_config(
        presence={"backend": "redis", "redis": {"url": url}},
        cluster={"manager": "redis", "url": url},
    )
    result = check_config(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert result.stdout.count("***") >= 2
    host = "/var/run/redis.sock" if url.startswith("unix") else "redis.example"
    assert host in result.stdout  # what helps debugging stays


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANIC_RT_")}
    return subprocess.run(
        [sys.executable, "-m", "sanic_rt", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_env_override_errors_name_the_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", base_config())
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        result = run_cli(*command, cwd=tmp_path, SANIC_RT_SERVER__PORT="abc")
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "config error: SANIC_RT_SERVER__PORT: expected int, got 'abc'"
        )
    result = run_cli("check-config", str(path), cwd=tmp_path, SANIC_RT_SERVR__PORT="8001")
    assert_refused(result, "SANIC_RT_SERVR__PORT: servr", "unknown section")


def test_a_misspelled_section_is_an_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nmode = "dev"\n[servr]\nport = 1\n')
    result = run_cli("check-config", str(path), cwd=tmp_path)
    assert_refused(result, f"{path}: servr", "unknown section")
