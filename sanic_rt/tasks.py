"""Background tasks that are kept referenced until they end.

The event loop holds only weak references to tasks: one started with a bare
``ensure_future`` and dropped may be garbage-collected while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

#: seconds a shutdown waits for a task or client to close
CLOSE_TIMEOUT = 2.0


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def cancel_task(task: Any) -> None:
    """Cancel ``task`` (if it is a running asyncio task) and wait for it to end."""
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        await wait_bounded(task)


async def wait_bounded(awaitable: Any) -> None:
    """Wait up to ``CLOSE_TIMEOUT`` for ``awaitable``, never longer, never raising.

    ``asyncio.wait`` rather than ``wait_for``: on a timeout ``wait_for`` cancels
    and then waits for the cancellation to finish, which a client stuck in its
    connection cleanup can make unbounded; a shutdown must not hang on it.
    """
    future = asyncio.ensure_future(awaitable)
    await asyncio.wait({future}, timeout=CLOSE_TIMEOUT)
    if future.done() and not future.cancelled():
        future.exception()  # retrieved: a failed close is not worth a warning
