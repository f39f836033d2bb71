"""The JSON module python-socketio and python-engineio encode and decode packets with.

``AsyncServer(json=...)`` takes any module with ``dumps`` and ``loads``; this one
uses orjson (several times faster than the standard library on packet-sized
payloads) and falls back to python-engineio's own module wherever orjson would
answer differently, so that what goes over the wire means the same:

- ``loads``: orjson turns integers beyond 64 bits into floats, where the
  standard library keeps them exact (and python-engineio refuses ones over 100
  digits). Text with a run of 19 or more digits is decoded by python-engineio's
  module; so is anything orjson rejects (``NaN``, lone surrogates, ``1e400``),
  which then raises or decodes exactly as before, except that nesting too
  deep for it raises ``ValueError`` (as orjson does) instead of ``RecursionError``.
- ``dumps``: orjson refuses integers beyond 64 bits, non-string keys and lone
  surrogates; those go to the standard library. Dataclasses and datetimes are
  passed through to it too, so they still raise ``TypeError`` as before.

What differs on purpose: non-ASCII text is sent as UTF-8 rather than
``\\uXXXX`` escapes (the same JSON value, fewer bytes), and a float NaN or
infinity is sent as ``null`` (the standard library writes ``NaN``, which no
client's JSON parser accepts).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from engineio import json as engineio_json

__all__ = ["dumps", "loads"]

_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
#: 19 digits can exceed the int64 range orjson keeps exact (-9223372036854775809).
_LONG_DIGIT_RUN = re.compile(r"\d{19}")
_COMPACT = (",", ":")


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` for Engine.IO/Socket.IO packets (compact, like their callers ask)."""
    if not kwargs or kwargs == {"separators": _COMPACT}:
        try:
            return orjson.dumps(obj, option=_DUMPS_OPTIONS).decode()
        except TypeError:
            pass  # a value orjson does not take: the standard library decides
        kwargs.setdefault("separators", _COMPACT)
    result: str = engineio_json.dumps(obj, **kwargs)
    return result


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for Engine.IO/Socket.IO packets; large integers stay exact."""
    try:
        return _loads(text, **kwargs)
    except RecursionError:
        # Deep nesting: orjson says JSONDecodeError, the standard library
        # RecursionError, which python-engineio's Packet.decode does not catch
        # (it escaped the websocket handler as a traceback per frame).
        raise ValueError("JSON nested too deeply") from None


def _loads(text: str | bytes, **kwargs: Any) -> Any:
    if not kwargs and _LONG_DIGIT_RUN.search(text if isinstance(text, str) else text.decode()):
        return engineio_json.loads(text)
    if not kwargs:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # e.g. NaN, which the standard library accepts: it decides
    return engineio_json.loads(text, **kwargs)
