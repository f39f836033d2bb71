"""Logging set-up: one line per record, and no flood from python-socketio.

python-socketio's Redis manager logs an error on every emit while Redis is
down; the filter lets one record per message template through per interval.
"""

from __future__ import annotations

import logging
import time

FLOOD_INTERVAL = 10.0


class OncePerInterval(logging.Filter):
    def __init__(self, interval: float = FLOOD_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
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
        logging.getLogger(name).addFilter(OncePerInterval())


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
