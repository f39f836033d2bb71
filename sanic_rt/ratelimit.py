"""Event rate limits: token buckets charged by an event's cost.

Each connection has a bucket (``[server] events_per_second``/``events_burst``)
and each user one more, shared by all of that user's connections on this node
in every namespace (``user_events_per_second``/``user_events_burst``): many
connections of one user cannot multiply what the user may spend. An event
costs 1, and the presence reads cost more the more ids they name
(:func:`event_cost`), so a query of 500 ids is not as cheap as a ping.
"""

from __future__ import annotations

import heapq
import math
import time
from typing import Any

#: events charged by the number of ids in their ``user_ids``
ID_CHARGED_EVENTS = frozenset({"presence:query", "presence:subscribe", "presence:unsubscribe"})
#: ids that cost one token on top of the event's own
IDS_PER_TOKEN = 20


def event_cost(event: str, data: Any) -> int:
    """Tokens an event costs: 1, plus ``ceil(ids / IDS_PER_TOKEN)`` for the presence reads.

    A bucket clamps the cost to its burst (:meth:`TokenBucket.take`), so the
    largest request is always possible once the bucket is full, and repeating
    it is throttled to the bucket's rate.
    """
    if event in ID_CHARGED_EVENTS and isinstance(data, dict):
        ids = data.get("user_ids")
        if isinstance(ids, list):
            return 1 + math.ceil(len(ids) / IDS_PER_TOKEN)
    return 1


class TokenBucket:
    __slots__ = ("allowance", "burst", "rate", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.allowance = float(burst)
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens (at most the burst) if there are that many."""
        now = time.monotonic()
        self.allowance = min(self.burst, self.allowance + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = min(cost, self.burst)
        if self.allowance < cost:
            return False
        self.allowance -= cost
        return True

    def full_at(self) -> float:
        """The monotonic time this bucket is full again if nothing more is spent."""
        return self.stamp + (self.burst - self.allowance) / self.rate

    def give_back(self, cost: float) -> None:
        """Undo a :meth:`take` whose event was refused by another bucket."""
        self.allowance = min(self.burst, self.allowance + min(cost, self.burst))


class UserBudgets:
    """One bucket per user, kept while the user has a connection here and until it has refilled.

    A bucket dropped with its user's last connection would let a user reset their
    budget by reconnecting; one kept forever would grow without bound. Buckets of
    users without a connection wait in a heap by the time they are full again and
    are dropped lazily on the next call after it, so what is kept is bounded by
    the users active within one refill time (``burst / rate``).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._connections: dict[str, int] = {}
        self._idle: list[tuple[float, str]] = []
        self._queued: set[str] = set()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, user_id: str) -> TokenBucket:
        """The user's bucket, made full on first use (kept until refilled, see the class)."""
        self._drop_refilled()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = TokenBucket(self.rate, self.burst)
        self._queue_if_idle(user_id, bucket)
        return bucket

    def take(self, user_id: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` from the user's bucket if it holds that many."""
        taken = self.bucket(user_id).take(cost)
        self._queue_if_idle(user_id, self._buckets[user_id])
        return taken

    def acquire(self, user_id: str) -> TokenBucket:
        """The user's bucket, counted as used by one more connection."""
        self._connections[user_id] = self._connections.get(user_id, 0) + 1
        return self.bucket(user_id)

    def release(self, user_id: str) -> None:
        """One connection fewer; the bucket stays until it has refilled."""
        users = self._connections.get(user_id, 0)
        if users > 1:
            self._connections[user_id] = users - 1
            return
        self._connections.pop(user_id, None)
        bucket = self._buckets.get(user_id)
        if bucket is not None:
            self._queue_if_idle(user_id, bucket)
        self._drop_refilled()

    def _queue_if_idle(self, user_id: str, bucket: TokenBucket) -> None:
        if user_id in self._connections or user_id in self._queued:
            return
        self._queued.add(user_id)
        heapq.heappush(self._idle, (bucket.full_at(), user_id))

    def _drop_refilled(self) -> None:
        now = time.monotonic()
        while self._idle and self._idle[0][0] <= now:
            _, user_id = heapq.heappop(self._idle)
            self._queued.discard(user_id)
            bucket = self._buckets.get(user_id)
            if bucket is None or user_id in self._connections:
                continue  # reconnected: queued again by its last release
            if bucket.full_at() <= now:
                del self._buckets[user_id]
            else:  # spent again since it was queued
                self._queue_if_idle(user_id, bucket)
