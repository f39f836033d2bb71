"""Packets are encoded with orjson (sanic_rt/wire_json.py) and mean exactly what they did.

Checked against python-engineio's own JSON module value by value, and end to end
through the real server with the official JS client and python-socketio's client.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import socketio
from engineio import json as engineio_json

from sanic_rt import wire_json
from sanic_rt.api import BaseNamespace
from sanic_rt.testing import config_from_dict, inline_plugin, running_app, token

JS_DIR = Path(__file__).parent / "js"
SECRET = "w" * 32
BIG = 2**70
TEXT = "héllo wörld, 日本語, emoji 🎉"
PAYLOAD = {"text": TEXT, "n": [BIG, -(2**63) - 1, 2**63, 9007199254740993, 1.5, -0.0]}

DECODE_CASES = [
    '{"a":1,"b":[true,false,null],"c":"x"}',
    '"h\\u00e9llo \\ud83c\\udf89"',
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    '{"id":"12345678901234567890123"}',
    "NaN",
    "[Infinity,-Infinity]",
    "1e400",
    '"\\ud800"',
    "1.0000000000000002",
    "[1e16, 5e-324]",
]


class Echo(BaseNamespace):
    async def on_echo(self, sid: str, data: Any) -> Any:
        return data


def echo_plugin() -> tuple[str, Any]:
    return inline_plugin("echo", register_namespaces=lambda register: register("/echo", Echo))


@pytest.mark.parametrize("text", DECODE_CASES)
def test_decodes_like_engineio(text: str) -> None:
    try:
        expected = engineio_json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            wire_json.loads(text)
        return
    got = wire_json.loads(text)
    assert repr(got) == repr(expected)  # repr: 1 vs 1.0, -0.0, nan compare as written
    assert json.dumps(got) == json.dumps(expected)


def test_refuses_integers_engineio_refuses() -> None:
    with pytest.raises(ValueError):
        wire_json.loads("1" * 101)


@pytest.mark.parametrize(
    "value",
    [PAYLOAD, {"deep": [[{"x": None}]]}, [BIG, -BIG], {1: "int key"}, "lone \ud800 surrogate"],
)
def test_encodes_the_same_value(value: Any) -> None:
    assert json.loads(wire_json.dumps(value, separators=(",", ":"))) == json.loads(
        engineio_json.dumps(value, separators=(",", ":"))
    )


def test_what_the_standard_library_refuses_is_still_refused() -> None:
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class Point:
        x: int

    for value in (Point(1), datetime.datetime(2026, 1, 1), {"s": {1, 2}}):
        with pytest.raises(TypeError):
            wire_json.dumps({"v": value})


def test_nan_goes_out_as_valid_json() -> None:
    assert json.loads(wire_json.dumps({"x": math.nan})) == {"x": None}


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
    reason="node and socket.io-client are needed (make js-deps)",
)
async def test_js_client_round_trip_and_utf8_on_the_wire() -> None:
    config = config_from_dict({"auth": {"secret": SECRET}})
    # What a JS number can carry exactly; larger integers are the Python client's case.
    sent = {"text": TEXT, "n": [9007199254740991, -9007199254740991, 1.5, 0]}
    async with running_app(config, plugins=[echo_plugin()]) as (_, url):
        proc = await asyncio.create_subprocess_exec(
            "node",
            "echo.js",
            url,
            "/echo",
            token(config, "js-user"),
            "echo",
            json.dumps(sent),
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["event"] == "ack", (result, err.decode())
    assert result["ack"] == {"ok": True, "data": sent}
    ack_frames = [frame for frame in result["raw"] if frame and "/echo," in frame and "é" in frame]
    assert ack_frames, result["raw"]  # UTF-8 on the wire, not \u00e9 escapes
    assert "\\u00e9" not in "".join(frame for frame in result["raw"] if frame)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_python_client_round_trip_keeps_large_integers(transport: str) -> None:
    config = config_from_dict({"auth": {"secret": SECRET}})
    async with running_app(config, plugins=[echo_plugin()]) as (_, url):
        client = socketio.AsyncClient()
        await client.connect(
            url, namespaces=["/echo"], auth={"token": token(config, "py")}, transports=[transport]
        )
        try:
            ack = await client.call("echo", PAYLOAD, namespace="/echo", timeout=10)
        finally:
            await client.disconnect()
    assert ack == {"ok": True, "data": PAYLOAD}
    assert [type(n) for n in ack["data"]["n"]] == [int, int, int, int, float, float]
