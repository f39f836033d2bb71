"""The one payload-validation helper, for Socket.IO events and HTTP bodies.

A handler states its payload's shape once as a dict of fields::

    payload = validate(data, {"conversation_id": Id(), "text": Text(max_len=4000)})

Anything malformed raises :class:`AckError` ``bad_request`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envelope import AckError

MISSING = object()


@dataclass(frozen=True)
class Field:
    optional: bool = False
    default: Any = None

    def check(self, value: Any, name: str) -> Any:
        return value


def _bad(name: str, message: str) -> AckError:
    return AckError("bad_request", f"{name}: {message}", field=name)


@dataclass(frozen=True)
class Id(Field):
    """A non-empty string id, at most ``max_len`` characters."""

    max_len: int = 128

    def check(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value:
            raise _bad(name, "expected a non-empty string")
        if len(value) > self.max_len:
            raise _bad(name, f"longer than {self.max_len} characters")
        if not _is_utf8(value):
            raise _bad(name, "not valid Unicode (lone surrogate)")
        return value


def _is_utf8(value: str) -> bool:
    # JSON allows "\ud800"; such a string cannot be encoded for a storage key.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Text(Field):
    min_len: int = 1
    max_len: int = 4000

    def check(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise _bad(name, "expected a string")
        if len(value) < self.min_len:
            raise _bad(name, "must not be empty")
        if len(value) > self.max_len:
            raise _bad(name, f"longer than {self.max_len} characters")
        return value


@dataclass(frozen=True)
class IdList(Field):
    max_items: int = 500
    max_len: int = 128

    def check(self, value: Any, name: str) -> list[str]:
        if not isinstance(value, list):
            raise _bad(name, "expected a list of strings")
        if len(value) > self.max_items:
            raise _bad(name, f"more than {self.max_items} ids")
        item = Id(max_len=self.max_len)
        return list(dict.fromkeys(item.check(v, name) for v in value))


@dataclass(frozen=True)
class Int(Field):
    """An integer in ``[min_value, max_value]`` (``true``/``false`` are not integers)."""

    min_value: int = 0
    max_value: int = 2**31 - 1

    def check(self, value: Any, name: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(name, "expected an integer")
        if not self.min_value <= value <= self.max_value:
            raise _bad(name, f"expected {self.min_value}..{self.max_value}")
        return value


@dataclass(frozen=True)
class Bool(Field):
    def check(self, value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, "expected true or false")
        return value


@dataclass(frozen=True)
class Choice(Field):
    choices: tuple[str, ...] = ()

    def check(self, value: Any, name: str) -> str:
        if value not in self.choices:
            raise _bad(name, f"expected one of {', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class Json(Field):
    """Any JSON value (an object by default)."""

    object_only: bool = True

    def check(self, value: Any, name: str) -> Any:
        if self.object_only and not isinstance(value, dict):
            raise _bad(name, "expected an object")
        return value


def validate(data: Any, schema: dict[str, Field]) -> dict[str, Any]:
    """Check ``data`` against ``schema``; unknown keys are ignored."""
    if not isinstance(data, dict):
        raise AckError("bad_request", "payload: expected an object", field="payload")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        value = data.get(name, MISSING)
        if value is MISSING or (value is None and spec.optional):
            if not spec.optional:
                raise _bad(name, "required")
            out[name] = spec.default
            continue
        out[name] = spec.check(value, name)
    return out


def validate_settings(table: Any, schema: dict[str, Field]) -> dict[str, Any]:
    """A plugin's ``[plugins.<name>]`` table: :func:`validate` plus unknown keys refused.

    Raises ``ValueError`` with a one-line reason (the plugin's ``configure`` hook
    lets it propagate; start-up then exits 2 naming the plugin).
    """
    if not isinstance(table, dict):
        raise ValueError("expected a table")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        known = ", ".join(schema) or "none"
        raise ValueError(f"{unknown[0]}: unknown key (known: {known})")
    try:
        return validate(table, schema)
    except AckError as err:
        raise ValueError(err.message) from None
