"""Hooks are called through pluggy: wrappers, ordering and tracing see every call."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import pytest
import socketio

from sanic_rt.hookspecs import hookimpl
from sanic_rt.testing import config_from_dict, inline_plugin, running_app, token
from tests.conftest import base_config
from tests.support.clients import Client


class DenyMalloryWrapper:
    """A new-style wrapper around ``authorize``: sees every call and adds its own answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    @hookimpl(wrapper=True)
    def authorize(self, user: Any, action: str, settings: Any) -> Generator[None, Any, Any]:
        self.calls.append((user.user_id, action, settings))
        results = yield
        return [*results, user.user_id != "mallory"]


async def test_a_wrapper_around_authorize_runs_and_its_answer_counts(clients):
    wrapper = DenyMalloryWrapper()
    config = config_from_dict(base_config(plugins={"guard": {"note": "own table"}}))
    async with running_app(config, plugins=[("guard", wrapper)]) as (_app, url):
        alice = await clients(url, token(config, "alice"))
        assert alice.sio.connected
        mallory = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await mallory.connect(url, token(config, "mallory"), wait_timeout=5)
        await mallory.close()
        assert mallory.refusals[-1]["data"]["code"] == "forbidden"
    # Called once per namespace connection, with this plugin's own settings.
    assert ("alice", "connect", {"note": "own table"}) in wrapper.calls
    assert ("mallory", "connect", {"note": "own table"}) in wrapper.calls


class FollowsObserver:
    """An old-style hookwrapper sees the combined outcome of ``follows``."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    @hookimpl(hookwrapper=True)
    def follows(self, namespace: str) -> Generator[None, Any, None]:
        outcome = yield
        self.outcomes.append((namespace, outcome.get_result()))


async def test_an_old_style_hookwrapper_sees_the_results(clients):
    observer = FollowsObserver()
    friends = inline_plugin("friends", follows=lambda namespace: ["bob"])
    config = config_from_dict(base_config(plugins={"enabled": ["chats"]}))
    async with running_app(config, plugins=[friends, ("observer", observer)]) as (_app, url):
        await clients(url, token(config, "alice"))
    assert ("/chats", [["bob"]]) in observer.outcomes


async def test_tryfirst_orders_implementations_and_tracing_sees_calls(clients):
    order: list[str] = []

    class Early:
        @hookimpl(tryfirst=True)
        def user_connected(self, user: Any) -> None:
            order.append("early")

    late = inline_plugin("late", user_connected=lambda user: order.append("late"))
    config = config_from_dict(base_config(plugins={"enabled": ["chats"]}))
    # Registered first, so pluggy would call it last without tryfirst.
    async with running_app(config, plugins=[("early", Early()), late]) as (app, url):
        trace: list[str] = []
        pm = app.ctx.gateway.plugins.pm
        pm.trace.root.setwriter(trace.append)
        undo = pm.enable_tracing()
        try:
            await clients(url, token(config, "alice"))
        finally:
            undo()
    assert order == ["early", "late"]
    traced = "".join(trace)
    assert "authorize" in traced and "follows" in traced and "user_connected" in traced


async def test_a_failing_hook_is_logged_naming_its_plugin(caplog):
    async def follows(user: Any) -> list[str]:
        raise RuntimeError("social graph down")

    config = config_from_dict(base_config(plugins={"enabled": ["chats"]}))
    async with running_app(config, plugins=[inline_plugin("flaky", follows=follows)]) as (_, url):
        client = Client()
        with caplog.at_level(logging.ERROR, logger="sanic_rt.namespace"):
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(url, token(config, "alice"), wait_timeout=5)
        await client.close()
    assert "raised by plugin 'flaky' in hook 'follows'" in caplog.text
