"""``asyncio.Queue`` and ``asyncio.Event`` without a ``collections.deque`` each.

Every idle connection holds two queues (uvicorn's websocket protocol and
python-engineio's socket) and an event (uvicorn's ``writable``): in CPython 3.11
each queue holds three deques and an event with a fourth, and a deque takes
~760 bytes however empty it is, nine per connection. These classes keep
``asyncio``'s own code and replace only the containers (``_queue``, ``_getters``,
``_putters``, ``_waiters``) with :class:`SmallDeque`, a list with ``popleft``:
~56 bytes empty. A list's ``popleft`` moves the rest, which for the few packets
or waiters a connection queues costs less than a deque's block.

What they rely on, in ``asyncio/queues.py`` and ``asyncio/locks.py``
(``Queue.__init__``, ``Queue._init``/``_get``/``_put``, ``Queue._wakeup_next``,
``Event.__init__``/``wait``/``set``): these containers are used only through
``append``, ``popleft``, ``remove``, iteration, ``len`` and truth.
tests/test_conn_memory.py fails if that code changes.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, TypeVar

T = TypeVar("T")
#: items past which a queue's storage becomes a real deque (kept for the connection's life)
BACKLOG_TO_DEQUE = 32


class SmallDeque(list[T]):
    """The part of ``collections.deque`` that ``asyncio.Queue`` and ``asyncio.Event`` use."""

    __slots__ = ()

    def popleft(self) -> T:
        return self.pop(0)


class LeanEvent(asyncio.Event):
    """``asyncio.Event`` whose waiters are a :class:`SmallDeque`."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: Any = SmallDeque()


class LeanQueue(asyncio.Queue[T]):
    """``asyncio.Queue`` whose items and waiters are :class:`SmallDeque` s."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._getters: Any = SmallDeque()
        self._putters: Any = SmallDeque()
        finished = LeanEvent()
        finished.set()
        self._finished: Any = finished

    def _init(self, maxsize: int) -> None:
        # The documented hook for a queue's storage (PriorityQueue overrides it too).
        self._queue: Any = SmallDeque()

    def _put(self, item: T) -> None:
        queue = self._queue
        queue.append(item)
        if len(queue) > BACKLOG_TO_DEQUE and type(queue) is SmallDeque:
            # A client that reads slowly: popleft on a list moves the rest, so a long
            # backlog would cost quadratic time on the shared event loop.
            self._queue = collections.deque(queue)
