"""One public plugin API: sanic_rt.api (re-exported by sanic_rt), old paths kept."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import aiohttp
import pytest
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, text

import sanic_rt
from sanic_rt import api
from sanic_rt.testing import config_from_dict, inline_plugin, running_app
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[1]

#: (module, name) pairs that examples/polls, the first-party plugins and the
#: docs imported before sanic_rt.api existed: third-party plugins use them too.
OLD_PATHS = [
    ("sanic_rt.envelope", "AckError"),
    ("sanic_rt.hookspecs", "hookimpl"),
    ("sanic_rt.http_api", "envelope"),
    ("sanic_rt.http_api", "gateway_of"),
    ("sanic_rt.http_api", "json_body"),
    ("sanic_rt.http_api", "push_to_users"),
    ("sanic_rt.namespace", "BaseNamespace"),
    ("sanic_rt.validation", "Id"),
    ("sanic_rt.validation", "IdList"),
    ("sanic_rt.validation", "Int"),
    ("sanic_rt.validation", "Text"),
    ("sanic_rt.validation", "Bool"),
    ("sanic_rt.validation", "Choice"),
    ("sanic_rt.validation", "Json"),
    ("sanic_rt.validation", "validate"),
    ("sanic_rt.validation", "validate_settings"),
    ("sanic_rt.gateway", "user_room"),
    ("sanic_rt.backend", "BackendUnavailable"),
    ("sanic_rt.backend", "PresenceBackend"),
    ("sanic_rt.plugin_manager", "PluginConfigError"),
    ("sanic_rt.auth", "AuthenticatedUser"),
    ("sanic_rt.presence_model", "Timings"),
]


def test_every_public_name_is_importable_from_api_and_from_the_package():
    assert api.__all__ == sorted(api.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n))
    for name in api.__all__:
        assert getattr(sanic_rt, name) is getattr(api, name), name
    assert set(sanic_rt.__all__) == {*api.__all__, "api", "attach", "create_app", "load_config"}
    assert api.testing is importlib.import_module("sanic_rt.testing")


@pytest.mark.parametrize(("module", "name"), OLD_PATHS)
def test_import_paths_used_until_now_keep_working(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(api, name)


def sanic_rt_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sanic_rt"):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("sanic_rt"))
    return modules


@pytest.mark.parametrize(
    "path",
    [ROOT / "examples/polls/sanic_rt_polls/__init__.py", *sorted(ROOT.glob("plugins/*/*.py"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_plugins_use_only_the_public_api(path):
    assert sanic_rt_imports(path) <= {"sanic_rt", "sanic_rt.api"}


def test_py_typed_is_shipped():
    assert (Path(sanic_rt.__file__).parent / "py.typed").exists()


class Other(api.BaseNamespace):
    pass


async def test_a_plugin_finds_its_namespace_and_guards_a_route_with_the_api_key():
    key = "k" * 40

    def register_routes(register: api.RegisterRoutes) -> None:
        bp = Blueprint("finder")

        @bp.get("/hooks/which")
        @api.require_api_key
        async def which(request: Request) -> HTTPResponse:
            return text(type(api.namespace_of(request, "/other", Other)).__name__)

        register(bp)

    plugin = inline_plugin(
        "finder",
        register_namespaces=lambda register: register("/other", Other),
        register_routes=register_routes,
    )
    config = config_from_dict(base_config(api={"keys": [key]}))
    async with running_app(config, plugins=[plugin]) as (app, url):
        gateway = app.ctx.gateway
        assert isinstance(gateway.namespace("/other", Other), Other)
        assert gateway.namespace("/chats").namespace == "/chats"
        with pytest.raises(LookupError, match="no namespace /nope"):
            gateway.namespace("/nope")
        with pytest.raises(TypeError, match="not Other"):
            gateway.namespace("/chats", Other)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/hooks/which") as refused:
                assert refused.status == 401
                assert (await refused.json())["error"]["code"] == "unauthorized"
            headers = {"Authorization": f"Bearer {key}"}
            async with http.get(f"{url}/hooks/which", headers=headers) as allowed:
                assert allowed.status == 200 and await allowed.text() == "Other"
