"""A newcomer's rough edges: help texts, pointers instead of blank pages, warnings
instead of silence, a clean `git status` after `make bench`, packaging metadata."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.clients import http, make_token

ROOT = Path(__file__).resolve().parents[1]


def cli_help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sanic_rt", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def option_help(text: str, option: str) -> str:
    """The help text printed after ``option`` in argparse's usage listing."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    block = [lines[start].strip().removeprefix(option).strip()]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 10):
            break
        block.append(line.strip())
    return " ".join(block)


def test_serve_and_check_config_options_have_help() -> None:
    serve = cli_help("serve")
    assert "address to bind" in option_help(serve, "--host HOST")
    assert "TCP port" in option_help(serve, "--port PORT")
    assert "websocket-only" in option_help(serve, "--workers WORKERS")
    assert "TOML config file" in option_help(cli_help("check-config"), "file")


async def test_root_and_unknown_pages_point_somewhere(app_server) -> None:
    _app, url = app_server
    status, body = await http("GET", url + "/")
    assert status == 200 and body["data"]["socket_io_path"] == "/socket.io/"
    assert body["data"]["health"] == "/health"
    status, body = await http("GET", url + "/no/such/page")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert body["data"]["socket_io_path"] == "/socket.io/"
    # Under /api/ a 404 stays the plain envelope.
    status, body = await http("GET", url + "/api/v1/nothing")
    assert status == 404 and body == {
        "ok": False,
        "error": {"code": "not_found", "message": "Requested URL /api/v1/nothing not found"},
    }


async def test_a_friends_claim_that_is_not_a_list_is_warned_about(
    app_server, clients, caplog
) -> None:
    _app, url = app_server
    caplog.set_level(logging.WARNING, logger="sanic_rt.plugins.socials")
    client = await clients(url, make_token("dora", friends="bob"), namespaces=["/socials"])
    assert (await client.call("ping", {}, namespace="/socials"))["ok"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "sanic_rt.plugins.socials"]
    expected = "/socials: claim 'friends' is a str, not a list of ids: no presence followed"
    assert warnings == [expected]


def test_bench_results_stay_out_of_git_status() -> None:
    new_result = "bench/results/2099-01-01.json"
    done = subprocess.run(["git", "check-ignore", "-q", new_result], cwd=ROOT, timeout=30)
    assert done.returncode == 0, f"{new_result} would show in git status"


def test_the_client_extra_and_license_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("python-socketio[asyncio-client]") for dep in
               project["optional-dependencies"]["client"])  # fmt: skip
    # `make run` installs it, so the README's Python snippet runs in that venv.
    assert "-e '.[client]'" in (ROOT / "Makefile").read_text().split("\nvenv:")[1].split("\n\n")[0]
    # An SPDX string and a license file: no setuptools deprecation warning on install.
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
