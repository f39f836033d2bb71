"""Concurrent calls run as batches: one backend round trip for many callers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``flush(items)`` for the items submitted while earlier batches were in flight.

    Under a storm thousands of callers arrive at once; one round trip each would
    queue on the connection pool. A caller that finds fewer than ``max_in_flight``
    batches running starts one right away, so a lone call still costs one round
    trip; while all of them run, the callers that arrive go into the next batches
    (at most ``batch_size`` items each), taken as soon as one of them returns.
    Several batches in flight overlap one batch's round trip with the encoding
    and decoding of the others, for a process that sleeps waiting on its
    backend; one (the default) costs the fewest round trips.
    ``flush`` returns one result per item, in order; a result that is an
    exception is raised to that item's caller only. If ``flush`` raises, every
    caller of the batch gets it.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        batch_size: int,
        max_in_flight: int = 1,
    ) -> None:
        self.flush = flush
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        #: each running drain task and the batch it has in flight
        self._drains: dict[asyncio.Task[None], list[tuple[T, asyncio.Future[R]]]] = {}

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._drains) < self.max_in_flight:
            task = asyncio.create_task(self._drain())
            self._drains[task] = []
        return await future

    async def _drain(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            while self._pending:
                batch = self._pending[: self.batch_size]
                self._pending = self._pending[self.batch_size :]
                self._drains[task] = batch
                await self._run(batch)
        finally:
            self._drains.pop(task, None)

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
        drains = dict(self._drains)
        for task in drains:
            task.cancel()
        for task in drains:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for batch in drains.values():
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        for _, future in self._pending:
            if not future.done():
                future.set_exception(error)
        self._pending = []
