"""Cluster managers whose emits are all-or-nothing on this node.

python-socketio's ``AsyncPubSubManager.emit`` (socketio/async_pubsub_manager.py,
``await self._handle_emit(message)`` then ``await self._publish(message)``)
delivers to this node's clients first and publishes to the other nodes after;
``AsyncRedisManager._publish`` (socketio/async_redis_manager.py) retries once,
logs "giving up" and returns normally. With Redis down a sender was told ``ok``
while only its own node's clients got the message.

Here the publish comes first and raises :class:`BackendUnavailable` when it
fails (refused, reset, timed out by ``[cluster] timeout``), and local delivery
follows only a publish that went through: an emit answered ``unavailable`` was
delivered nowhere by this node. What such an answer cannot promise is that no
other node got it: a PUBLISH written to a stalled Redis may still be executed
after the deadline (docs/deployment.md, "When Redis is down").
"""

from __future__ import annotations

from typing import Any

import socketio

from . import metrics
from .backend import BackendUnavailable
from .tasks import cancel_task

# Attempts per publish: the second one reconnects (a pooled connection may be
# stale after a Redis restart), as upstream's _publish does.
PUBLISH_ATTEMPTS = 2


def bus_unavailable(reason: str) -> BackendUnavailable:
    """The one way a cluster-bus publish fails: counted, then answered ``unavailable``."""
    metrics.cluster_emit_error()
    return BackendUnavailable(reason)


class PublishBeforeDelivering:
    """Mixin for an ``AsyncPubSubManager`` subclass whose ``_publish`` raises on failure.

    Upstream's ``emit`` calls ``_handle_emit`` (local delivery) and then
    ``_publish`` with the same message. Our own emits are recognised by their
    ``host_id`` (the listener drops messages from this host, so no other path
    hands one to ``_handle_emit``): local delivery is held back and done after
    the publish returned. Put it first in the bases: ``class M(PublishBeforeDelivering,
    SomePubSubManager)``.
    """

    host_id: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # message identity -> message, between _handle_emit and _publish of one emit
        self._held: dict[int, dict[str, Any]] = {}

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("host_id") == self.host_id:
            self._held[id(message)] = message  # no await before _publish: cannot leak
            return
        await super()._handle_emit(message)  # type: ignore[misc]

    async def _publish(self, data: dict[str, Any]) -> Any:
        held = self._held.pop(id(data), None)
        result = await super()._publish(data)  # type: ignore[misc]
        if held is not None:
            await super()._handle_emit(held)  # type: ignore[misc]
        return result


class RaisingRedisPublish(socketio.AsyncRedisManager):
    """``AsyncRedisManager`` whose failed publish raises instead of logging "giving up"."""

    connected: bool  # set by AsyncRedisManager: whether self.redis was connected

    async def _publish(self, data: dict[str, Any]) -> Any:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                if not self.connected:
                    self._redis_connect()
                return await self.redis.publish(self.channel, self.json.dumps(data))
            except Exception as err:
                self.connected = False
                if attempt == PUBLISH_ATTEMPTS:
                    raise bus_unavailable(
                        f"cluster bus publish failed: {type(err).__name__}"
                    ) from None
        return None


class RedisManager(PublishBeforeDelivering, RaisingRedisPublish):
    """The Redis cluster manager: publish first, deliver locally only if it went through."""


async def close_manager(manager: Any) -> None:
    """Stop a cluster manager's background tasks and clients at shutdown.

    python-socketio's pub/sub managers start a listener task (``manager.thread``,
    from ``AsyncPubSubManager.initialize``) and have no close of their own; a
    manager of ours that holds more (the streams bus) defines ``close()``.
    """
    close = getattr(manager, "close", None)
    if close is not None:
        await close()
        return
    await cancel_task(getattr(manager, "thread", None))
