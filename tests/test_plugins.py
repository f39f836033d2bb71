"""The plugin core: dispatch, errors, rate limit, and loading failures.

Inline plugins (sanic_rt.testing) are served in-process on the real ASGI stack;
the rest runs the real server through its CLI.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import socketio

from sanic_rt.app import create_app
from sanic_rt.config import ConfigError
from sanic_rt.envelope import AckError
from sanic_rt.namespace import BaseNamespace, handler_name
from sanic_rt.plugin_manager import PluginError
from sanic_rt.testing import config_from_dict, inline_plugin, running_app, token
from tests.conftest import base_config
from tests.support.clients import SECRET, Client, eventually, make_token


class Boom(BaseNamespace):
    async def on_boom_explode(self, sid: str, data: Any) -> None:
        raise RuntimeError("kaboom")

    async def on_boom_refuse(self, sid: str, data: Any) -> None:
        raise AckError("forbidden", "not you")

    async def on_echo_me_back(self, sid: str, data: Any) -> Any:
        return data


def boom_plugin(name: str = "boom", path: str = "/boom") -> tuple[str, Any]:
    return inline_plugin(name, register_namespaces=lambda register: register(path, Boom))


def test_dispatch_rule():
    assert handler_name("chat:message") == "on_chat_message"
    assert handler_name("echo.me-back") == "on_echo_me_back"
    assert handler_name("ping") == "on_ping"


async def test_handler_exception_is_internal_and_the_connection_stays(clients, caplog):
    config = config_from_dict(base_config())
    async with running_app(config, plugins=[boom_plugin()]) as (_app, url):
        client = await clients(url, token(config, "alice"), namespaces=["/boom"])
        with caplog.at_level(logging.ERROR, logger="sanic_rt.namespace"):
            ack = await client.call("boom:explode", {}, namespace="/boom")
        assert ack == {"ok": False, "error": {"code": "internal", "message": "internal error"}}
        [record] = [r for r in caplog.records if r.name == "sanic_rt.namespace"]
        assert record.exc_info and record.exc_info[0] is RuntimeError  # the traceback is logged
        assert client.sio.connected
        assert (await client.call("ping", {}, namespace="/boom"))["ok"] is True
        ack = await client.call("boom:refuse", {}, namespace="/boom")
        assert ack == {"ok": False, "error": {"code": "forbidden", "message": "not you"}}
        ack = await client.call("echo.me-back", {"a": 1}, namespace="/boom")
        assert ack == {"ok": True, "data": {"a": 1}}


async def test_unknown_event_is_not_found(start_server, clients):
    server = start_server()
    client = await clients(server.url, make_token("alice"))
    ack = await client.call("chat:teleport", {"conversation_id": "c1"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    assert "chat:teleport" in ack["error"]["message"]
    assert client.sio.connected


async def test_rate_limit_answers_rate_limited_and_keeps_the_connection(start_server, clients):
    server = start_server(base_config(server={"events_per_second": 0.1, "events_burst": 3}))
    client = await clients(server.url, make_token("alice"))
    acks = [await client.call("ping", {}) for _ in range(4)]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[3]["error"]["code"] == "rate_limited"
    assert client.sio.connected
    # Other connections have their own bucket.
    other = await clients(server.url, make_token("alice"))
    assert (await other.call("ping", {}))["ok"] is True


async def test_authorize_connect_deny_refuses_with_forbidden(clients):
    config = config_from_dict(base_config())
    deny = inline_plugin(
        "deny_mallory",
        authorize=lambda user, action: not (action == "connect" and user.user_id == "mallory"),
    )
    async with running_app(config, plugins=[deny]) as (_app, url):
        ok = await clients(url, token(config, "alice"))
        assert ok.sio.connected
        mallory = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await mallory.connect(url, token(config, "mallory"), wait_timeout=5)
        await mallory.close()
        assert mallory.refusals[-1]["data"]["code"] == "forbidden"


def test_two_plugins_claiming_one_namespace_fail_naming_both():
    config = config_from_dict(base_config())
    with pytest.raises(PluginError) as err:
        create_app(config, extra_plugins=[boom_plugin("first"), boom_plugin("second")])
    assert str(err.value) == "namespace /boom claimed by both 'first' and 'second'"
    with pytest.raises(PluginError) as err:
        create_app(config, extra_plugins=[boom_plugin("squatter", "/chats")])
    assert str(err.value) == "namespace /chats claimed by both 'chats' and 'squatter'"


def test_typo_in_a_hook_name_fails_loudly():
    config = config_from_dict(base_config())
    typo = inline_plugin("typo", register_namespace=lambda register: None)
    with pytest.raises(PluginError) as err:
        create_app(config, extra_plugins=[typo])
    message = str(err.value)
    assert message.startswith("plugin 'typo':") and "register_namespace" in message
    assert "\n" not in message


def test_namespace_must_subclass_base_namespace():
    config = config_from_dict(base_config())
    bad = inline_plugin("plain", register_namespaces=lambda register: register("/plain", object))
    with pytest.raises(PluginError, match="'plain': namespace /plain must subclass BaseNamespace"):
        create_app(config, extra_plugins=[bad])


def test_settings_table_of_a_plugin_that_is_not_enabled_fails():
    config = config_from_dict(base_config(plugins={"enabled": ["chats"], "orders": {}}))
    with pytest.raises(PluginError, match=r"\[plugins.orders\] given but not enabled"):
        create_app(config)


async def test_inline_plugin_gets_its_own_settings(clients):
    seen: dict[str, Any] = {}

    def configure(settings: dict[str, Any]) -> dict[str, Any]:
        return {"greeting": settings.get("greeting", "hi").upper()}

    def follows(namespace: str, settings: dict[str, Any]) -> list[str]:
        seen[namespace] = settings
        return ["bob"] if namespace == "/boom" else []

    config = config_from_dict(base_config(plugins={"boomer": {"greeting": "hello"}}))
    plugin = inline_plugin(
        "boomer",
        configure=configure,
        follows=follows,
        register_namespaces=lambda register, settings: register("/boom", Boom),
    )
    async with running_app(config, plugins=[plugin]) as (_app, url):
        alice = await clients(url, token(config, "alice"), namespaces=["/boom"])
        await clients(url, make_token("bob", secret=SECRET), namespaces=["/chats"])
        await eventually(lambda: alice.events("presence:update", "/boom"))
        assert alice.events("presence:update", "/boom")[0]["user_id"] == "bob"
    assert seen["/boom"] == {"greeting": "HELLO"}


def test_hookimpl_arguments_not_in_the_spec_fail_naming_the_plugin():
    config = config_from_dict(base_config())
    bad = inline_plugin("sloppy", authorize=lambda user, colour: None)
    with pytest.raises(PluginError) as err:
        create_app(config, extra_plugins=[bad])
    message = str(err.value)
    assert message.startswith("plugin 'sloppy':") and "colour" in message and "\n" not in message


async def test_a_failing_connect_hook_refuses_with_internal_and_registers_nothing(clients):
    def follows(user):
        raise RuntimeError("social graph down")

    config = config_from_dict(base_config())
    async with running_app(config, plugins=[inline_plugin("flaky", follows=follows)]) as (app, url):
        client = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(url, token(config, "alice"))
        assert client.refusals[-1]["data"] == {
            "code": "internal",
            "message": "internal error; try again",
        }
        presence = app.ctx.gateway.presence
        assert presence.local == {} and not (await presence.get("alice")).online


def test_a_selected_backend_that_fails_to_import_says_why(tmp_path, monkeypatch):
    # An entry point in the backends group whose module cannot be imported.
    dist = tmp_path / "brokenbackend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenbackend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[sanic_rt.backends]\nbroken = brokenbackend_missing_module\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_from_dict(base_config(presence={"backend": "broken"}))
    with pytest.raises(ConfigError) as info:
        create_app(config)
    message = str(info.value)
    assert "presence.backend" in message and "failed to import" in message
    assert "ModuleNotFoundError" in message
