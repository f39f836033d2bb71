"""``python -m bench.no_hiredis serve ...``: sanic-rt with redis-py's pure-Python reply parser.

The A side of ``python -m bench.redis_wait --hiredis``: the same checkout, with hiredis
hidden from redis-py (which then parses replies in Python, as before hiredis was a
requirement). Bench-only.
"""

from __future__ import annotations

import sys

sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py: HIREDIS_AVAILABLE False

from sanic_rt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
