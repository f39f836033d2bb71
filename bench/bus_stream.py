"""The one-slot cost of the streams bus: XADD and XREAD of its stream, one server vs a Cluster.

``python -m bench.bus_stream [seconds]`` starts a Redis server and a 3-master
Cluster (tests/support/topologies.py), then on each, through the bus's own client
(``stream_manager.redis_client``): XADDs of a 300-byte emit at concurrency 32 for
``seconds``, then XREADs of everything back in pages of the bus's READ_COUNT.
Prints one JSON line per topology. The stream is one key, so on the Cluster every
entry goes to one master: the numbers say what that master takes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sanic_rt.redis_connect import close_redis
from sanic_rt.stream_manager import READ_COUNT, redis_client

PAYLOAD = {"m": "x" * 300}
CONCURRENCY = 32
STREAM = "bench:bus"


async def measure(url: str, seconds: float) -> dict[str, Any]:
    client = redis_client(url, timeout=5.0, connect_timeout=2.0, max_connections=CONCURRENCY)
    try:
        await client.delete(STREAM)
        added = await _add(client, seconds)
        read, read_seconds = await _read_all(client)
    finally:
        await close_redis(client)
    return {
        "xadd_per_s": round(added / seconds),
        "xread_entries_per_s": round(read / read_seconds),
        "entries": read,
    }


async def _add(client: Any, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await client.xadd(STREAM, PAYLOAD, maxlen=1_000_000, approximate=True)
            count += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count


async def _read_all(client: Any) -> tuple[int, float]:
    start, last, read = time.monotonic(), "0-0", 0
    while True:
        batches = await client.xread({STREAM: last}, count=READ_COUNT)
        if not batches:
            return read, time.monotonic() - start
        entries = batches[0][1]
        read += len(entries)
        last = entries[-1][0]


def main() -> None:
    from tests.support.procs import redis_process
    from tests.support.topologies import ClusterSetup

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    work = Path(tempfile.mkdtemp(prefix="bus-stream-"))
    (work / "single").mkdir()
    single = redis_process(work / "single").start()
    cluster = ClusterSetup(work / "cluster")
    try:
        cluster.start()
        for name, url in (
            ("single", f"redis://127.0.0.1:{single.port}/0"),
            ("cluster", cluster.url()),
        ):
            print(json.dumps({"topology": name} | asyncio.run(measure(url, seconds))))
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
