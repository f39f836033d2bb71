"""The one payload-validation helper."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest

from sanic_rt.app import create_app
from sanic_rt.auth import AuthError, TokenVerifier
from sanic_rt.config import load_config
from sanic_rt.envelope import AckError
from sanic_rt.namespace import BaseNamespace
from sanic_rt.plugin_manager import PluginError
from sanic_rt.testing import config_from_dict, inline_plugin
from sanic_rt.validation import Choice, Id, IdList, Int, Json, Text, validate
from tests.conftest import base_config
from tests.support.clients import SECRET


@pytest.mark.parametrize("schema", [{"user_ids": IdList()}, {"user_ids": Id()}])
def test_lone_surrogates_are_bad_requests(schema):
    value = ["\ud800"] if isinstance(schema["user_ids"], IdList) else "\ud800"
    with pytest.raises(AckError) as info:
        validate({"user_ids": value}, schema)
    assert info.value.code == "bad_request" and info.value.field == "user_ids"


def test_a_token_naming_a_lone_surrogate_is_invalid():
    verifier = TokenVerifier(load_config(env={}, overrides={"auth.secret": SECRET}))
    token = jwt.encode({"sub": "\ud800", "exp": 4_000_000_000}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as info:
        asyncio.run(verifier.verify(token))
    assert info.value.code == "invalid_token"


# --- one naming scheme, wrong options caught when the field is built -------------


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        (Text, {"max_len": 3}, {"max_length": 3}),
        (Text, {"min_len": 2}, {"min_length": 2}),
        (Id, {"max_len": 3}, {"max_length": 3}),
        (IdList, {"max_len": 3}, {"max_length": 3}),
    ],
)
def test_old_option_names_still_work_with_a_deprecation_warning(field, old, new):
    with pytest.warns(DeprecationWarning, match=f"use {next(iter(new))}="):
        legacy = field(**old)
    assert legacy == field(**new)
    with pytest.warns(DeprecationWarning):
        assert getattr(legacy, next(iter(old))) == next(iter(new.values()))


def test_every_field_uses_one_naming_scheme():
    assert Text(min_length=2, max_length=3).check("abc", "t") == "abc"
    assert Id(max_length=3).check("abc", "i") == "abc"
    assert IdList(max_items=3, max_length=3).check(["a", "a", "b"], "l") == ["a", "b"]
    assert Int(min_value=1, max_value=3).check(2, "n") == 2
    with pytest.raises(AckError, match="shorter than 2 characters"):
        Text(min_length=2).check("a", "t")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Text(max_items=3), "Text: unknown option 'max_items'"),
        (lambda: IdList(max_lenght=3), "IdList: unknown option 'max_lenght'"),
        (lambda: Int(min_value="1"), "Int: option min_value expects int, got str"),
        (lambda: Int(min_value=5, max_value=1), "Int: minimum 5 is above maximum 1"),
        (lambda: Text(max_length=-1), "Text: option max_length must be >= 0"),
        (lambda: Id(optional="yes"), "Id: option optional expects bool, got str"),
        (lambda: Choice(choices="ab"), "Choice: option choices expects a non-empty tuple"),
        (lambda: Json(object_only=1), "Json: option object_only expects bool, got int"),
    ],
)
def test_a_wrong_field_option_is_a_type_error_naming_field_and_option(build, message):
    with pytest.raises(TypeError) as info:
        build()
    assert str(info.value).startswith(message)


def test_a_namespace_building_a_bad_schema_stops_start_up_naming_the_plugin():
    class Sloppy(BaseNamespace):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.fields = {"text": Text(max_items=3)}

    plugin = inline_plugin("sloppy", register_namespaces=lambda register: register("/s", Sloppy))
    with pytest.raises(PluginError) as info:
        create_app(config_from_dict(base_config()), extra_plugins=[plugin])
    assert str(info.value).startswith("plugin 'sloppy': namespace /s: Text: unknown option")
