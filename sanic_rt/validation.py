"""The one payload-validation helper, for Socket.IO events and HTTP bodies.

A handler states its payload's shape once as a dict of fields::

    MESSAGE = {"conversation_id": Id(), "text": Text(max_length=4000)}
    payload = validate(data, MESSAGE)

Anything malformed raises :class:`AckError` ``bad_request`` naming the field.

Options follow one scheme: ``min_length``/``max_length`` (characters),
``min_value``/``max_value`` (numbers), ``max_items`` (lists). The names used
before 0.2 (``max_len``, ``min_len``) still work with a ``DeprecationWarning``.
A wrong option (an unknown name, a value of the wrong type) raises
``TypeError`` naming the field type and the option when the field is built:
build schemas at import time (module constants) or in a namespace's
``__init__`` so a typo stops start-up instead of failing the first event.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .envelope import AckError

__all__ = [
    "Bool",
    "Choice",
    "Field",
    "Id",
    "IdList",
    "Int",
    "Json",
    "Text",
    "validate",
    "validate_settings",
]

MISSING = object()


@dataclass(frozen=True)
class Field:
    """The base of every payload field; subclass it and override :meth:`check` for your own.

    :param optional: the key may be absent (or ``null``); ``validate`` then
        gives ``default``.
    :param default: the value of an absent optional key.
    """

    optional: bool = False
    default: Any = None

    #: option names used before 0.2 -> today's name (accepted with a DeprecationWarning)
    renamed: ClassVar[Mapping[str, str]] = {}

    def check(self, value: Any, name: str) -> Any:
        """Return ``value`` (possibly normalised) or raise ``bad_request`` naming ``name``."""
        return value

    def __getattr__(self, name: str) -> Any:
        # Only called for missing attributes: ``field.max_len`` still reads ``max_length``.
        new = type(self).renamed.get(name)
        if new is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _warn_renamed(type(self).__name__, name, new, stacklevel=3)
        return getattr(self, new)

    def _set_options(self, options: dict[str, Any], old: Mapping[str, Any]) -> None:
        """Apply renamed options, check every option, and set them (the dataclass is frozen)."""
        name = type(self).__name__
        for option, value in old.items():
            new = type(self).renamed.get(option)
            if new is None:
                known = ", ".join(f.name for f in fields(self))
                raise TypeError(f"{name}: unknown option {option!r} (options: {known})")
            _warn_renamed(name, option, new, stacklevel=4)
            options[new] = value
        _check_option(name, "optional", options["optional"], bool)
        for option, value in options.items():
            if option.startswith(("min_", "max_")):
                _check_count(name, option, value)
            object.__setattr__(self, option, value)
        low = options.get("min_length", options.get("min_value"))
        high = options.get("max_length", options.get("max_value"))
        if low is not None and high is not None and low > high:
            raise TypeError(f"{name}: minimum {low} is above maximum {high}")


def _warn_renamed(field: str, old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{field}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel
    )


def _check_option(field: str, option: str, value: Any, expected: type) -> None:
    if not isinstance(value, expected):
        raise TypeError(
            f"{field}: option {option} expects {expected.__name__}, got {type(value).__name__}"
        )


def _check_count(field: str, option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{field}: option {option} expects int, got {type(value).__name__}")
    if option in ("max_length", "max_items", "min_length") and value < 0:
        raise TypeError(f"{field}: option {option} must be >= 0, got {value}")


def _bad(name: str, message: str) -> AckError:
    return AckError("bad_request", f"{name}: {message}", field=name)


@dataclass(frozen=True, init=False)
class Id(Field):
    """A non-empty string id of at most ``max_length`` characters, valid Unicode.

    :param max_length: the longest id accepted (default 128).

    >>> validate({"poll_id": "p1"}, {"poll_id": Id()})
    {'poll_id': 'p1'}
    """

    max_length: int = 128
    renamed: ClassVar[Mapping[str, str]] = {"max_len": "max_length"}

    def __init__(
        self, *, max_length: int = 128, optional: bool = False, default: Any = None, **old: Any
    ) -> None:
        options = {"optional": optional, "default": default, "max_length": max_length}
        self._set_options(options, old)

    def check(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or not value:
            raise _bad(name, "expected a non-empty string")
        if len(value) > self.max_length:
            raise _bad(name, f"longer than {self.max_length} characters")
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


@dataclass(frozen=True, init=False)
class Text(Field):
    """A string of ``min_length`` to ``max_length`` characters.

    :param min_length: the shortest text accepted (default 1: not empty).
    :param max_length: the longest text accepted (default 4000).

    >>> validate({"text": "hi"}, {"text": Text(max_length=280)})
    {'text': 'hi'}
    """

    min_length: int = 1
    max_length: int = 4000
    renamed: ClassVar[Mapping[str, str]] = {"min_len": "min_length", "max_len": "max_length"}

    def __init__(
        self,
        *,
        min_length: int = 1,
        max_length: int = 4000,
        optional: bool = False,
        default: Any = None,
        **old: Any,
    ) -> None:
        options = {"optional": optional, "default": default}
        self._set_options(options | {"min_length": min_length, "max_length": max_length}, old)

    def check(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise _bad(name, "expected a string")
        if len(value) < self.min_length:
            if self.min_length == 1:
                raise _bad(name, "must not be empty")
            raise _bad(name, f"shorter than {self.min_length} characters")
        if len(value) > self.max_length:
            raise _bad(name, f"longer than {self.max_length} characters")
        return value


@dataclass(frozen=True, init=False)
class IdList(Field):
    """A list of at most ``max_items`` ids (each as :class:`Id`); duplicates dropped, order kept.

    :param max_items: the most ids accepted (default 500).
    :param max_length: the longest id accepted (default 128).

    >>> validate({"user_ids": ["a", "b", "a"]}, {"user_ids": IdList(max_items=10)})
    {'user_ids': ['a', 'b']}
    """

    max_items: int = 500
    max_length: int = 128
    renamed: ClassVar[Mapping[str, str]] = {"max_len": "max_length"}

    def __init__(
        self,
        *,
        max_items: int = 500,
        max_length: int = 128,
        optional: bool = False,
        default: Any = None,
        **old: Any,
    ) -> None:
        options = {"optional": optional, "default": default}
        self._set_options(options | {"max_items": max_items, "max_length": max_length}, old)

    def check(self, value: Any, name: str) -> list[str]:
        if not isinstance(value, list):
            raise _bad(name, "expected a list of strings")
        if len(value) > self.max_items:
            raise _bad(name, f"more than {self.max_items} ids")
        item = Id(max_length=self.max_length)
        return list(dict.fromkeys(item.check(v, name) for v in value))


@dataclass(frozen=True, init=False)
class Int(Field):
    """An integer in ``[min_value, max_value]`` (``true``/``false`` are not integers).

    :param min_value: the smallest value accepted (default 0).
    :param max_value: the largest value accepted (default 2**31 - 1).

    >>> validate({"limit": 10}, {"limit": Int(min_value=1, max_value=100)})
    {'limit': 10}
    """

    min_value: int = 0
    max_value: int = 2**31 - 1

    def __init__(
        self,
        *,
        min_value: int = 0,
        max_value: int = 2**31 - 1,
        optional: bool = False,
        default: Any = None,
        **old: Any,
    ) -> None:
        options = {"optional": optional, "default": default}
        self._set_options(options | {"min_value": min_value, "max_value": max_value}, old)

    def check(self, value: Any, name: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(name, "expected an integer")
        if not self.min_value <= value <= self.max_value:
            raise _bad(name, f"expected {self.min_value}..{self.max_value}")
        return value


@dataclass(frozen=True, init=False)
class Bool(Field):
    """``true`` or ``false``.

    >>> validate({"typing": True}, {"typing": Bool()})
    {'typing': True}
    """

    def __init__(self, *, optional: bool = False, default: Any = None, **old: Any) -> None:
        self._set_options({"optional": optional, "default": default}, old)

    def check(self, value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, "expected true or false")
        return value


@dataclass(frozen=True, init=False)
class Choice(Field):
    """One of ``choices`` (strings).

    :param choices: the accepted values, a non-empty tuple or list of strings.

    >>> validate({"status": "away"}, {"status": Choice(choices=("online", "away"))})
    {'status': 'away'}
    """

    choices: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        choices: tuple[str, ...] | list[str] = (),
        optional: bool = False,
        default: Any = None,
        **old: Any,
    ) -> None:
        if (
            not isinstance(choices, tuple | list)
            or not choices
            or not all(isinstance(c, str) for c in choices)
        ):
            raise TypeError(
                f"Choice: option choices expects a non-empty tuple of str, got {choices!r}"
            )
        options = {"optional": optional, "default": default, "choices": tuple(choices)}
        self._set_options(options, old)

    def check(self, value: Any, name: str) -> str:
        if value not in self.choices:
            raise _bad(name, f"expected one of {', '.join(self.choices)}")
        return str(value)


@dataclass(frozen=True, init=False)
class Json(Field):
    """Any JSON value; with ``object_only`` (the default) a JSON object.

    :param object_only: accept only an object (a dict); ``False`` accepts any JSON value.

    >>> validate({"data": {"a": 1}}, {"data": Json()})
    {'data': {'a': 1}}
    """

    object_only: bool = True

    def __init__(
        self, *, object_only: bool = True, optional: bool = False, default: Any = None, **old: Any
    ) -> None:
        _check_option("Json", "object_only", object_only, bool)
        self._set_options(
            {"optional": optional, "default": default, "object_only": object_only}, old
        )

    def check(self, value: Any, name: str) -> Any:
        if self.object_only and not isinstance(value, dict):
            raise _bad(name, "expected an object")
        return value


def validate(data: Any, schema: Mapping[str, Field]) -> dict[str, Any]:
    """Check ``data`` against ``schema``; unknown keys are ignored.

    :param data: the event's payload or the HTTP body (anything but an object
        is ``bad_request`` with ``field="payload"``).
    :param schema: payload key -> :class:`Field`.
    :returns: the checked values by key; an absent optional key gets its default.
    :raises AckError: ``bad_request`` naming the first bad field.

    >>> validate({"user_ids": ["bob"], "extra": 1}, {"user_ids": IdList()})
    {'user_ids': ['bob']}
    """
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


def validate_settings(table: Any, schema: Mapping[str, Field]) -> dict[str, Any]:
    """A plugin's ``[plugins.<name>]`` table: :func:`validate` plus unknown keys refused.

    :param table: the raw table, as the ``configure`` hook receives it.
    :param schema: key -> :class:`Field`, as for :func:`validate`.
    :returns: the checked settings, defaults filled in.
    :raises ValueError: with a one-line reason (the plugin's ``configure`` hook
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
