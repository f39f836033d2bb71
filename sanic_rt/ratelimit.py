"""Event rate limits: token buckets charged by an event's cost.

Each connection has a bucket (``[server] events_per_second``/``events_burst``)
and each user one more, shared by all of that user's connections on this node
in every namespace (``user_events_per_second``/``user_events_burst``): many
connections of one user cannot multiply what the user may spend. An event
costs 1, and the presence reads cost more the more ids they name
(:func:`event_cost`), so a query of 500 ids is not as cheap as a ping.
"""

from __future__ import annotations

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

    def give_back(self, cost: float) -> None:
        """Undo a :meth:`take` whose event was refused by another bucket."""
        self.allowance = min(self.burst, self.allowance + min(cost, self.burst))


class UserBudgets:
    """One bucket per user with a connection on this node, dropped with the last one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    def acquire(self, user_id: str) -> TokenBucket:
        """The user's bucket, counted as used by one more connection."""
        bucket, users = self._buckets.get(user_id) or (TokenBucket(self.rate, self.burst), 0)
        self._buckets[user_id] = (bucket, users + 1)
        return bucket

    def release(self, user_id: str) -> None:
        entry = self._buckets.get(user_id)
        if entry is None:
            return
        bucket, users = entry
        if users > 1:
            self._buckets[user_id] = (bucket, users - 1)
        else:
            del self._buckets[user_id]
