"""Concurrent calls run as batches: one backend round trip for many callers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``flush(items)`` for every item submitted while the previous batch was in flight.

    Under a storm thousands of callers arrive at once; one round trip each would
    queue on the connection pool. The first caller starts a batch right away, so
    a lone call still costs one round trip; the callers that arrive meanwhile go
    into the next batch (at most ``batch_size`` items). ``flush`` returns one
    result per item, in order; a result that is an exception is raised to that
    item's caller only. If ``flush`` raises, every caller of the batch gets it.
    """

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], batch_size: int
    ) -> None:
        self.flush = flush
        self.batch_size = batch_size
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight: list[tuple[T, asyncio.Future[R]]] = []
        self._drain_task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.batch_size]
                self._pending = self._pending[self.batch_size :]
                self._in_flight = batch
                await self._run(batch)
        finally:
            self._drain_task, self._in_flight = None, []

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.flush([item for item, _ in batch])
        except Exception as err:  # every caller of the batch answers with it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self, error: Exception) -> None:
        """Stop; callers still waiting get ``error``."""
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        for _, future in self._in_flight + self._pending:
            if not future.done():
                future.set_exception(error)
        self._pending, self._in_flight = [], []
