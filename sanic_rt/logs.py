"""Logging set-up: one line per record, and no flood from python-socketio.

python-socketio's Redis manager logs an error on every emit while Redis is
down; the filter lets one record per message template through per interval.
"""

from __future__ import annotations

import logging
import re
import time

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


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
