"""``[cluster] routing = "targeted"``: a streams bus where a node reads only its own stream.

With ``routing = "broadcast"`` (the default) every node reads the one bus stream
and decodes every emit of the cluster. Here each node has its own stream
(``<channel>:bus:node:<node id>``) and an emit is written only to the streams of the
nodes that hold a member of its room(s): each node records in Redis, per room, that
it holds members (``<channel>:bus:room:<namespace>:<room>``, a set of node ids, added
to on a node's first member and removed from on its last). A connection's own sid
is a room too, so cross-node disconnects and room changes reach exactly its node;
an emit to a whole namespace goes to every live node (``<channel>:bus:nodes``, a sorted
set of node heartbeats).

An emit costs two round trips (the room sets, then the XADDs in one pipeline) and a
first join or last leave of a room on a node one more; in exchange a node's CPU
goes to its own connections' traffic only (docs/deployment.md has the arithmetic).
Connection state recovery is not available with it (check_deployment refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from .backend import BackendUnavailable
from .gateway import PRESENCE_ROOM_PREFIX
from .managers import bus_unavailable
from .stream_manager import StreamManager
from .tasks import cancel_task

log = logging.getLogger("sanic_rt.targeted_bus")

#: how often a node refreshes its heartbeat; it counts as gone after three misses
HEARTBEAT_SECONDS = 2.0
NODE_TIMEOUT = 3 * HEARTBEAT_SECONDS
#: after this long without a beat a node leaves the registry and its stream expires
NODE_FORGOTTEN = 10 * NODE_TIMEOUT


class TargetedStreamManager(StreamManager):
    """A node reads its own stream; emits go to the nodes that hold their rooms."""

    name = "redis-streams-targeted"

    def __init__(self, url: str, channel: str = "sanic_rt", **options: Any) -> None:
        super().__init__(url, channel=channel, **options)
        # Under <channel>:bus: apart from the presence backend's own node keys.
        self.node_prefix = f"{channel}:bus:node:"
        self.room_prefix = f"{channel}:bus:room:"
        self.nodes_key = f"{channel}:bus:nodes"
        self.stream = self.node_prefix + self.host_id  # what this node's reader reads
        self._live: set[str] = set()
        self._dead: set[str] = set()
        self._live_checked = float("-inf")

    def initialize(self) -> None:
        super().initialize()
        if not self.write_only:
            self._heartbeat_task = self.server.start_background_task(self._heartbeat)

    async def close(self) -> None:
        await cancel_task(getattr(self, "_heartbeat_task", None))
        await super().close()

    # --- where a message goes ------------------------------------------------------

    def _room_key(self, namespace: str, room: str) -> str:
        return f"{self.room_prefix}{namespace}:{room}"

    async def _publish(self, data: dict[str, Any]) -> str:
        try:
            nodes = await self._targets(data)
            nodes.discard(self.host_id)  # this node handles its own part directly
            if not nodes:
                return ""
            payload = self.json.dumps(data)
            pipe = self.redis.pipeline(transaction=False)
            for node in sorted(nodes):
                pipe.xadd(
                    self.node_prefix + node, {"m": payload}, maxlen=self.maxlen, approximate=True
                )
            ids = await pipe.execute()
        except (RedisError, OSError) as err:
            raise bus_unavailable(f"the cluster bus is unavailable ({err})") from None
        return str(ids[-1].decode() if isinstance(ids[-1], bytes) else ids[-1])

    async def _targets(self, data: dict[str, Any]) -> set[str]:
        method, namespace = data.get("method"), data.get("namespace") or "/"
        if method == "callback":
            return {data["host_id"]}
        if method == "emit":
            room = data.get("room")
            if room is None:
                return await self._live_nodes()
            rooms = [room] if isinstance(room, str) else list(room)
            if any(str(r).startswith(PRESENCE_ROOM_PREFIX) for r in rooms):
                # Presence subscribers live in the subscription index, not in rooms
                # this node registers (sanic_rt/room_index.py): every live node.
                return await self._live_nodes()
        elif method == "close_room":
            rooms = [data["room"]]
        else:  # disconnect, enter_room, leave_room: the node holding the sid
            rooms = [data["sid"]]
        keys = [self._room_key(namespace, r) for r in rooms]
        members: Any = await self.redis.sunion(keys)
        await self._check_nodes()
        # A node that stopped beating (crashed) may still be in room sets; one that
        # has not beaten yet (just started) is not "dead" and gets its messages.
        return {m.decode() if isinstance(m, bytes) else m for m in members} - self._dead

    async def _live_nodes(self) -> set[str]:
        await self._check_nodes()
        return self._live | {self.host_id}

    async def _check_nodes(self) -> None:
        now = time.time()
        if now - self._live_checked < HEARTBEAT_SECONDS / 2:
            return
        beats: Any = await self.redis.zrange(self.nodes_key, 0, -1, withscores=True)
        live: set[str] = set()
        dead: set[str] = set()
        for node, beat in beats:
            name = node.decode() if isinstance(node, bytes) else node
            (live if beat >= now - NODE_TIMEOUT else dead).add(name)
        self._live, self._dead, self._live_checked = live, dead, now

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                now = time.time()
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(self.nodes_key, {self.host_id: now})
                pipe.zremrangebyscore(self.nodes_key, "-inf", now - NODE_FORGOTTEN)
                # A node's stream outlives it by NODE_FORGOTTEN at most.
                pipe.expire(self.stream, int(NODE_FORGOTTEN))
                await pipe.execute()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # --- keeping the room sets: a node is in a room's set while it holds a member ----

    async def connect(self, sid: str, namespace: str) -> Any:
        result = await super().connect(sid, namespace)
        await self._hold(namespace, [sid])
        return result

    async def enter_room(
        self, sid: str, namespace: str, room: str, eio_sid: str | None = None
    ) -> Any:
        local = self.is_connected(sid, namespace) or self.is_pre_connected(sid, namespace)
        result = await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if local and len(self.rooms.get(namespace, {}).get(room, ())) == 1:
            await self._hold(namespace, [room])
        return result

    async def leave_room(self, sid: str, namespace: str, room: str) -> Any:
        result = await super().leave_room(sid, namespace, room)
        await self._release(namespace, [room])
        return result

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        # Only a local sid has rooms here (its own among them); a remote one's
        # disconnect is forwarded to its node by the parent class.
        rooms = [r for r in self.get_rooms(sid, namespace) if r is not None]
        result = await super().disconnect(sid, namespace, **kwargs)
        if rooms:
            await self._release(namespace, rooms)
        return result

    async def _hold(self, namespace: str, rooms: Iterable[str]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for room in rooms:
                pipe.sadd(self._room_key(namespace, room), self.host_id)
            await pipe.execute()
        except (RedisError, OSError) as err:
            raise BackendUnavailable(f"the cluster bus is unavailable ({err})") from None

    async def _release(self, namespace: str, rooms: Iterable[str]) -> None:
        held = self.rooms.get(namespace, {})
        gone = [r for r in rooms if not held.get(r)]
        if not gone:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for room in gone:
                pipe.srem(self._room_key(namespace, room), self.host_id)
            await pipe.execute()
        except (RedisError, OSError) as err:
            # A stale entry only costs a message this node discards.
            log.warning("room sets not updated (bus unavailable): %s", err)
