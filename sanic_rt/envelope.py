"""The one ack envelope, shared by Socket.IO acks and the HTTP API.

``{"ok": true, "data": ...}`` or ``{"ok": false, "error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR_CODES = frozenset(
    {
        "bad_request",
        "forbidden",
        "rate_limited",
        "not_found",
        "unavailable",
        "internal",
        "invalid_token",
        "token_expired",
        "unauthorized",
    }
)

HTTP_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}


class AckError(Exception):
    """Raised by a handler (or an HTTP route) to answer with an error envelope.

    :param code: one of :data:`ERROR_CODES` (``bad_request``, ``forbidden``, ...).
    :param message: a one-line reason for the client.
    :param field: the payload field at fault, if any.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def envelope(self) -> dict[str, Any]:
        """The error envelope ``{"ok": false, "error": {"code", "message", "field"?}}``."""
        return error(self.code, self.message, self.field)


@dataclass(frozen=True)
class Reply:
    """A handler's answer with fields beside ``data`` in the ok envelope (e.g. ``forbidden``)."""

    data: Any
    fields: dict[str, Any] = field(default_factory=dict)


def ok(data: Any = None, **fields: Any) -> dict[str, Any]:
    return {"ok": True, "data": data, **fields}


def error(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return {"ok": False, "error": body}
