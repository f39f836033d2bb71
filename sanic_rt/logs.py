"""Logging set-up: one line per record, and no flood from python-socketio.

python-socketio's Redis manager logs an error on every emit while Redis is
down; the filter lets one record per message template through per interval.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

FLOOD_INTERVAL = 10.0
_DIGITS = re.compile(r"\d+")


class OncePerInterval(logging.Filter):
    def __init__(self, interval: float = FLOOD_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # Digits masked: "retrying in 1 secs", "... in 2 secs" are one message.
        key = (record.name, _DIGITS.sub("#", str(record.msg)))
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval:
            return False
        self._last[key] = now
        return True


_installed = False


def quiet_socketio_logs() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("socketio", "socketio.server", "socketio.client", "engineio", "engineio.server"):
        logger = logging.getLogger(name)
        logger.addFilter(OncePerInterval())
        if logger.level == logging.NOTSET:
            # The level python-socketio/engineio pick for logger=False, set here
            # so that they do not also add their own stderr handler (every line
            # was printed twice, once unformatted).
            logger.setLevel(logging.ERROR)


#: LogRecord attributes a JSON line carries as fields when a call passes them in ``extra``
JSON_FIELDS = ("namespace", "user_id", "code", "method", "path", "status", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and the known fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class DropConnectionLines(logging.Filter):
    """uvicorn's per-WebSocket INFO lines ("[accepted]", "connection open/closed").

    Two lines per connection flood a production log, and the accepted line shows
    the query string (a ``?token=`` with it). ``[server] access_log`` writes ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith('%s - "WebSocket ') or msg in _CONNECTION_LINES)


_CONNECTION_LINES = frozenset({"connection open", "connection closed"})


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Set up the root logger once per process (the CLI, and each worker)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in ("uvicorn.error", "websockets.server", "websockets.protocol"):
        logging.getLogger(name).addFilter(DropConnectionLines())


access_log = logging.getLogger("sanic_rt.access")


def with_access_log(app: Any) -> Any:
    """ASGI middleware: one line per HTTP request and per WebSocket handshake.

    The path is logged without its query string, which may hold a token.
    """

    async def logged(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        started = time.monotonic()
        status: list[int] = []

        async def watched_send(message: dict[str, Any]) -> None:
            if not status:
                if message["type"] in ("http.response.start", "websocket.http.response.start"):
                    status.append(message["status"])
                elif message["type"] == "websocket.accept":
                    status.append(101)
                elif message["type"] == "websocket.close":
                    status.append(403)
            await send(message)

        try:
            await app(scope, receive, watched_send)
        finally:
            _log_access(scope, status[0] if status else 0, started)

    return logged


def _log_access(scope: dict[str, Any], status: int, started: float) -> None:
    method = "WS" if scope["type"] == "websocket" else scope.get("method", "?")
    path = scope.get("path", "")
    ms = round((time.monotonic() - started) * 1000, 1)
    fields = {"method": method, "path": path, "status": status, "duration_ms": ms}
    access_log.info("%s %s %s %.1fms", method, path, status, ms, extra=fields)
