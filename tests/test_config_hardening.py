"""Config refusals and masking through the real CLI: weak API keys, credentials in URLs,
errors that name the environment variable or the misspelled section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sanic_rt.app import api_keys, create_app
from sanic_rt.config import ConfigError, load_config, masked
from sanic_rt.testing import config_from_dict
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
        (base_config(api={"keys": ["", STRONG_KEY]}), "an API key is empty"),
        (base_config(api={"keys": ["   "]}), "an API key is empty"),
        (production(api={"keys": [STRONG_KEY, "short-key"]}), ">= 16 characters"),
    ],
)
def test_empty_or_short_api_keys_are_refused(config: dict, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_app(config_from_dict(config))
    assert info.value.key == "api.keys" and reason in info.value.expected


def test_short_keys_from_the_keys_file_are_refused_in_production(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{STRONG_KEY}\nletmein\n")
    config = production(api={"keys_file": str(keys_file)})
    # Through the CLI: exit 2 and one line naming the key.
    assert_refused(check_config(tmp_path, config), "api.keys_file", ">= 16 characters")
    keys_file.write_text(f"{STRONG_KEY}\n")
    assert api_keys(config_from_dict(config)) == [STRONG_KEY]
    # Dev mode takes a short key (a local experiment), never an empty one.
    assert api_keys(config_from_dict(base_config(api={"keys": ["dev"]}))) == ["dev"]


CREDENTIAL_URLS = [
    "redis://alice:hunter2-pw@redis.example:6379/0",
    "redis://:hunter2-pw@redis.example:6379/0",
    "redis://hunter2-pw@redis.example:6379/0",
    "redis://redis.example:6379/0?password=hunter2-pw",
    "redis://redis.example:6379/0?db=1&username=hunter2-pw&password=hunter2-pw",
    "redis://redis.example:6379/0?pass%77ord=hunter2-pw",
    "rediss://redis.example:6380/0?ssl_password=hunter2-pw",
    "unix://hunter2-pw@/var/run/redis.sock?db=0&password=hunter2-pw",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_every_credential_form_of_a_redis_url_is_masked(url: str) -> None:
    config = config_from_dict(
        {"presence": {"redis": {"url": url}}, "cluster": {"manager": "redis", "url": url}}
    )
    shown = json.dumps(masked(config))
    assert "hunter2" not in shown and shown.count("***") >= 2
    host = "/var/run/redis.sock" if url.startswith("unix") else "redis.example"
    assert host in shown  # what helps debugging stays


def test_check_config_prints_urls_masked(tmp_path: Path) -> None:
    url = "redis://user:hunter2-pw@redis.example:6379/0?password=hunter2-pw&db=2"
    config = base_config(
        presence={"backend": "redis", "redis": {"url": url}},
        cluster={"manager": "redis", "url": url},
    )
    result = check_config(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert '"redis://***@redis.example:6379/0?password=***&db=2"' in result.stdout


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
    result = run_cli("serve", "--config", str(path), cwd=tmp_path, SANIC_RT_SERVER__PORT="abc")
    assert result.returncode == 2
    assert result.stderr.strip() == "config error: SANIC_RT_SERVER__PORT: expected int, got 'abc'"
    with pytest.raises(ConfigError, match="SANIC_RT_SERVR__PORT: servr: unknown section"):
        load_config(path, env={"SANIC_RT_SERVR__PORT": "8001"})
    # A secret's value is never quoted back.
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"SANIC_RT_API__KEYS": "not-a-list-secret"})
    assert "SANIC_RT_API__KEYS" in str(info.value) and "not-a-list-secret" not in str(info.value)


def test_a_misspelled_section_is_an_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nmode = "dev"\n[servr]\nport = 1\n')
    result = run_cli("check-config", str(path), cwd=tmp_path)
    assert_refused(result, f"{path}: servr", "unknown section")
