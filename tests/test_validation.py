"""The one payload-validation helper."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from sanic_rt.auth import AuthError, TokenVerifier
from sanic_rt.config import load_config
from sanic_rt.envelope import AckError
from sanic_rt.validation import Id, IdList, validate
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
