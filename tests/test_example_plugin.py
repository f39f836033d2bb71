"""The third-party plugin example (examples/polls), installed like any package.

It proves entry-point discovery, config handing, the authorize and follows
hooks, ``sanic-rt plugins``, and the start-up failures: a plugin enabled but
not installed, one with bad config, and one that fails to import
(examples/broken_plugin, installed into a temporary directory only).
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from tests.conftest import base_config
from tests.plugins import start_failure
from tests.support.clients import eventually, http, make_token
from tests.support.procs import write_toml

ROOT = Path(__file__).resolve().parent.parent
NS = "/polls"
POLLS = {"enabled": ["chats", "polls"], "polls": {"creators": ["host"], "max_options": 3}}


def pip_install(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *args],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="session", autouse=True)
def polls_installed() -> None:
    """``make test-venv`` installs the example; install it here too if it is missing."""
    try:
        distribution("sanic-rt-polls")
    except PackageNotFoundError:
        pip_install("-e", str(ROOT / "examples" / "polls"))


@pytest.fixture(scope="session")
def broken_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory with the broken example installed, for PYTHONPATH of one process."""
    target = tmp_path_factory.mktemp("broken-plugin")
    pip_install(
        "--no-build-isolation", "--target", str(target), str(ROOT / "examples" / "broken_plugin")
    )
    return str(target)


def sanic_rt_plugins(tmp_path: Path, config: dict) -> str:
    path = write_toml(tmp_path / "plugins.toml", config)
    proc = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "plugins", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


def block(listing: str, name: str) -> list[str]:
    """The lines of one plugin in ``sanic-rt plugins`` output."""
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    return lines[start:end]


def test_plugins_command_lists_every_discovered_plugin(tmp_path):
    listing = sanic_rt_plugins(tmp_path, base_config())
    assert block(listing, "polls") == [
        "polls 0.1.0 [sanic_rt.plugins] disabled",
        "  namespaces: /polls",
        "  routes: GET /api/v1/polls/<poll_id:str>",
    ]
    assert block(listing, "chats") == [
        "chats 0.1.0 [sanic_rt.plugins] enabled",
        "  namespaces: /chats",
    ]
    assert block(listing, "orders") == [
        "orders 0.1.0 [sanic_rt.plugins] enabled",
        "  namespaces: /orders",
        "  routes: POST /api/v1/orders/<order_id:str>/events",
    ]
    for name in ("notifications", "socials"):
        assert block(listing, name)[0].endswith("[sanic_rt.plugins] enabled")
    assert block(listing, "memory")[0].endswith("[sanic_rt.backends] enabled")

    listing = sanic_rt_plugins(tmp_path, base_config(plugins=POLLS))
    assert block(listing, "polls")[0] == "polls 0.1.0 [sanic_rt.plugins] enabled"
    assert block(listing, "orders")[0] == "orders 0.1.0 [sanic_rt.plugins] disabled"


async def test_polls_namespace_route_and_hooks(start_server, clients):
    server = start_server(base_config(plugins=POLLS))
    # follows: every /polls connection follows the creators from config.
    voter = await clients(server.url, make_token("alice"), namespaces=[NS])
    host = await clients(server.url, make_token("host"), namespaces=[NS])
    await eventually(lambda: voter.events("presence:update", NS))
    assert voter.events("presence:update", NS)[0]["user_id"] == "host"

    # authorize: only creators may create polls.
    poll = {"question": "Lunch?", "options": ["pizza", "sushi"]}
    ack = await voter.call("poll:create", poll, namespace=NS)
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    ack = await host.call("poll:create", poll, namespace=NS)
    assert ack["ok"] is True
    poll_id = ack["data"]["id"]

    # config handing: max_options = 3.
    ack = await host.call("poll:create", {**poll, "options": ["a", "b", "c", "d"]}, namespace=NS)
    assert ack["ok"] is False and ack["error"]["field"] == "options"

    ack = await voter.call("poll:vote", {"poll_id": poll_id, "option": "sushi"}, namespace=NS)
    expected = {
        "poll_id": poll_id,
        "question": "Lunch?",
        "counts": {"pizza": 0, "sushi": 1},
        "votes": 1,
    }
    assert ack == {"ok": True, "data": expected}
    await eventually(lambda: host.events("poll:results", NS))
    assert host.events("poll:results", NS) == [expected]
    ack = await voter.call("poll:vote", {"poll_id": poll_id, "option": "tea"}, namespace=NS)
    assert ack["ok"] is False and ack["error"]["field"] == "option"
    ack = await voter.call("poll:results", {"poll_id": "nope"}, namespace=NS)
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"

    # the hook-added HTTP route
    status, reply = await http("GET", f"{server.url}/api/v1/polls/{poll_id}")
    assert (status, reply) == (200, {"ok": True, "data": expected})
    status, reply = await http("GET", f"{server.url}/api/v1/polls/nope")
    assert status == 404 and reply["error"]["code"] == "not_found"


def test_enabled_but_not_installed(tmp_path):
    code, lines = start_failure(tmp_path, base_config(plugins={"enabled": ["chats", "pols"]}))
    assert (code, lines) == (2, ["plugin 'pols': enabled but not installed"])


def test_bad_config(tmp_path):
    config = base_config(plugins={"enabled": ["polls"], "polls": {"max_options": 1}})
    code, lines = start_failure(tmp_path, config)
    assert (code, lines) == (
        2,
        ["plugin 'polls': invalid [plugins.polls]: max_options: expected 2..50"],
    )


def test_import_error(tmp_path, broken_plugin_path):
    config = base_config(plugins={"enabled": ["chats", "broken_example"]})
    code, lines = start_failure(tmp_path, config, env={"PYTHONPATH": broken_plugin_path})
    assert (code, lines) == (
        2,
        [
            "plugin 'broken_example': import failed: ModuleNotFoundError: "
            "No module named 'sanic_rt_missing_dependency'"
        ],
    )
    # Discovered but not enabled, it is listed with the reason and does not stop anything.
    path = write_toml(tmp_path / "listing.toml", base_config())
    proc = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "plugins", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": broken_plugin_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0
    assert block(proc.stdout, "broken_example") == [
        "broken_example 0.0.1 [sanic_rt.plugins] disabled",
        "  cannot load: plugin 'broken_example': import failed: ModuleNotFoundError: "
        "No module named 'sanic_rt_missing_dependency'",
    ]
