"""``[cluster] manager = "redis-streams"``: the cluster bus on one Redis Stream.

A python-socketio pub/sub manager (rooms, ``skip_sid``, cross-node disconnects
and callbacks work as with ``AsyncRedisManager``) that publishes with XADD
(trimmed to about ``[cluster] stream_maxlen`` entries) and reads with a blocking
XREAD from the last id it has seen. After a Redis outage or failover the reader
resumes from that id, so what other nodes published meanwhile is delivered
(while the stream still holds it) and nothing twice.

An emit is published first and delivered on this node after: if the XADD fails
the emit raises :class:`BackendUnavailable` (answered ``unavailable``) and
reached no one. The stream is also the event log of connection state recovery
(sanic_rt/recovery.py): an event's stream id is its offset, recovery sessions
are keys next to the stream, and a reconnect to any node recovers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import socketio
from redis.exceptions import RedisError
from socketio.async_pubsub_manager import AsyncPubSubManager
from socketio.packet import Packet

from .managers import bus_unavailable
from .recovery import (
    DEFAULT_LIMITS,
    Recovery,
    Session,
    SessionLimits,
    emit_args,
    message_args,
    parse_offset,
)
from .redis_connect import connect_redis
from .tasks import cancel_task, wait_bounded

log = logging.getLogger("sanic_rt.stream_manager")

#: how long one XREAD blocks waiting for entries; the reader's socket timeout is longer
READ_BLOCK_SECONDS = 1.0
READ_COUNT = 500
#: pause before the reader retries after an error; it doubles up to the maximum
RETRY_FIRST, RETRY_MAX = 0.05, 0.5
REPLAY_PAGE = 1000
#: connections of the publishing client (per master on a Cluster); emits beyond
#: it wait for a free one, up to the emit's timeout
PUBLISH_CONNECTIONS = 64
#: GET and DEL a session in one step, only for its own user and namespace
#: (KEYS: the session, its user's index, the index of all; ARGV: user, namespace, pid)
TAKE_SESSION = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, session = pcall(cjson.decode, raw)
if not ok or session.user_id ~= ARGV[1] or session.namespace ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
return raw
"""
#: SET a session and, in the same step, drop the oldest past the per-user and total
#: caps. Two sorted sets index the pids by expiry time (one ttl: the save order).
#: KEYS: the session, its user's index, the index of all; ARGV: pid, session, ttl ms,
#: per-user cap, total cap, the prefix of session keys
SAVE_SESSION = """
local t = redis.call('TIME')
local now, ttl = t[1] * 1000 + math.floor(t[2] / 1000), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
for i = 2, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
for i, cap in ipairs({tonumber(ARGV[4]), tonumber(ARGV[5])}) do
  local over = redis.call('ZCARD', KEYS[i + 1]) - cap
  if over > 0 then
    for _, pid in ipairs(redis.call('ZRANGE', KEYS[i + 1], 0, over - 1)) do
      redis.call('DEL', ARGV[6] .. pid)
      redis.call('ZREM', KEYS[2], pid)
      redis.call('ZREM', KEYS[3], pid)
    end
  end
end
return 1
"""


def redis_client(url: str, *, timeout: float, connect_timeout: float, max_connections: int) -> Any:
    """The bus's Redis client for ``url``: one server, a Sentinel master or a Cluster.

    On a Cluster the bus stream is one key, so it lives in one slot on one master
    (docs/deployment.md has what that costs); MOVED/ASK are followed by the client.
    """
    return connect_redis(
        url, max_connections=max_connections, timeout=timeout, connect_timeout=connect_timeout
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamManager(AsyncPubSubManager):
    """The cluster bus on a Redis Stream; see the module docstring."""

    name = "redis-streams"

    def __init__(
        self,
        url: str,
        channel: str = "sanic_rt",
        maxlen: int = 10_000,
        timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        super().__init__(channel=channel)
        self.stream = f"{channel}:bus"
        # One hash tag for a session and both indexes of sessions: the scripts that
        # save and take one touch all three, so on a Cluster they share a slot.
        self.session_prefix = f"{{{channel}}}:session:"
        self.maxlen = maxlen
        #: publishes, sessions, replay reads (the /ready check pings it)
        self.redis = redis_client(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=PUBLISH_CONNECTIONS,
        )
        # A blocking XREAD holds its connection; it gets its own, with a socket
        # timeout past the block so that a frozen Redis is noticed (and, on
        # Sentinel or Cluster, the new master found after a failover).
        self._reader = redis_client(
            url,
            timeout=READ_BLOCK_SECONDS + timeout + 1,
            connect_timeout=connect_timeout,
            max_connections=2,
        )
        #: the reader's position: every entry up to it has been handled on this node
        self.read_id: str | None = None
        self.recovery: Recovery | None = None
        self.event_log = self  # the recovery store: the stream and keys next to it
        self._take_session_script = self.redis.register_script(TAKE_SESSION)
        self._save_session_script = self.redis.register_script(SAVE_SESSION)

    async def close(self) -> None:
        """Stop the reader and release both Redis clients; called at shutdown."""
        await cancel_task(getattr(self, "thread", None))
        for client in (self._reader, self.redis):
            await wait_bounded(client.aclose())

    # --- publishing ----------------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Publish, then deliver on this node with the stream id as the offset.

        Replaces ``AsyncPubSubManager.emit``, which delivers locally before it
        publishes (and so reaches this node's clients even when the publish fails).
        The message it builds is the same.
        """
        room = to or room
        namespace = namespace or "/"
        if kwargs.get("ignore_queue"):
            return await self._deliver(event, emit_args(data), namespace, room, skip_sid, None)
        if callback is not None:
            if room is None:
                raise ValueError("Cannot use callback without a room set.")
            callback = (room, namespace, self._generate_ack_id(room, callback))
        args = emit_args(data)
        binary = Packet.data_is_binary(args)
        wire: list[Any] = args
        if binary:
            deconstructed, attachments = Packet.deconstruct_binary(args)
            wire = [deconstructed, *[base64.b64encode(a).decode() for a in attachments]]
        message = {"method": "emit", "event": event, "data": wire, "binary": binary}
        message |= {"namespace": namespace, "room": room, "skip_sid": skip_sid}
        message |= {"callback": callback, "host_id": self.host_id}
        offset = await self._publish(message)
        await self._handle_emit(message | {"offset": offset})

    async def _publish(self, data: dict[str, Any]) -> str:
        try:
            entry_id = await self.redis.xadd(
                self.stream, {"m": self.json.dumps(data)}, maxlen=self.maxlen, approximate=True
            )
        except (RedisError, OSError) as err:
            raise bus_unavailable(f"the cluster bus is unavailable ({err})") from None
        return _text(entry_id)

    # --- local delivery ------------------------------------------------------------

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("callback") is not None or self.recovery is None:
            await super()._handle_emit(message)
            return
        await self._deliver(
            message["event"],
            message_args(message),
            message.get("namespace") or "/",
            message.get("room"),
            message.get("skip_sid"),
            message.get("offset"),
        )

    async def _deliver(
        self, event: str, args: list[Any], namespace: str, room: Any, skip: Any, offset: Any
    ) -> None:
        if self.recovery is None:
            # A tuple is python-socketio's "these are the arguments".
            await socketio.AsyncManager.emit(self, event, tuple(args), namespace, room, skip)
        else:
            await self.recovery.deliver(self, event, args, namespace, room, skip, offset)

    # --- reading -------------------------------------------------------------------

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        """Entries after the last id seen, forever; Redis errors are waited out."""
        retry = RETRY_FIRST
        while True:
            try:
                if self.read_id is None:
                    self.read_id = await self._stream_tip()
                # From the reader's own position, never from an id this node published
                # itself: another node's earlier entry may still be unread.
                batches: Any = await self._reader.xread(
                    {self.stream: self.read_id},
                    count=READ_COUNT,
                    block=int(READ_BLOCK_SECONDS * 1000),
                )
            except (RedisError, OSError) as err:
                log.warning("cluster bus read failed, retrying in %.2fs: %s", retry, err)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_FIRST
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    offset = _text(entry_id)
                    message = self._decode(fields)
                    if message is not None:
                        yield message | {"offset": offset}
                    self.read_id = offset  # after the handler ran: delivered

    def _decode(self, fields: dict[Any, Any]) -> dict[str, Any] | None:
        raw = fields.get(b"m", fields.get("m"))
        try:
            message = self.json.loads(raw)
        except (TypeError, ValueError):
            return None
        return message if isinstance(message, dict) else None

    async def _stream_tip(self) -> str:
        """The last id ever added to the stream ("0-0" if there is none)."""
        try:
            info = await self._reader.xinfo_stream(self.stream)
        except aioredis.ResponseError:  # no such key yet
            return "0-0"
        return _text(info["last-generated-id"])

    # --- recovery store (sanic_rt.recovery.RecoveryStore) ------------------------------

    def delivered_upto(self) -> str:
        return self.read_id or "0-0"

    def _session_keys(self, pid: str, user_id: str) -> list[str]:
        """A session's key, its user's index of sessions, the index of all sessions."""
        tag = f"{{{self.channel}}}"
        return [self.session_prefix + pid, f"{tag}:session-user:{user_id}", f"{tag}:sessions"]

    async def save_session(
        self, pid: str, session: Session, ttl: float, limits: SessionLimits = DEFAULT_LIMITS
    ) -> None:
        ttl_ms = max(1, int(ttl * 1000))
        args: list[str | int] = [pid, session.dumps(), ttl_ms, limits.per_user, limits.total]
        keys = self._session_keys(pid, session.user_id)
        try:
            await self._save_session_script(keys=keys, args=[*args, self.session_prefix])
        except (RedisError, OSError) as err:
            log.warning("recovery session not saved (bus unavailable): %s", err)

    async def take_session(self, pid: str, user_id: str, namespace: str) -> Session | None:
        try:
            raw = await self._take_session_script(
                keys=self._session_keys(pid, user_id), args=[user_id, namespace, pid]
            )
        except (RedisError, OSError):
            return None
        return Session.loads(raw) if raw is not None else None

    async def read_after(
        self, offset: str, claimed: str | None = None
    ) -> list[tuple[str, dict[str, Any]]] | None:
        """The emits after ``offset``; None if the stream no longer holds all of them,
        or if ``claimed`` is past its newest entry."""
        key, claim = parse_offset(offset), parse_offset(claimed or offset)
        try:
            info = await self.redis.xinfo_stream(self.stream)
        except (RedisError, OSError):
            return None  # no stream (Redis restarted empty) or no Redis: fresh
        # Redis 7 records the highest id ever trimmed: anything after ``offset`` gone?
        trimmed = parse_offset(_text(info.get("max-deleted-entry-id", "0-0")))
        newest = parse_offset(_text(info["last-generated-id"]))
        if key is None or claim is None or newest is None or claim > newest:
            return None
        if key > newest or (trimmed and trimmed > key):
            return None
        return await self._range_after(offset)

    async def _range_after(self, offset: str) -> list[tuple[str, dict[str, Any]]] | None:
        found: list[tuple[str, dict[str, Any]]] = []
        start = offset
        while len(found) <= 2 * self.maxlen:
            try:
                page: Any = await self.redis.xrange(self.stream, min=f"({start}", count=REPLAY_PAGE)
            except (RedisError, OSError):
                return None
            for entry_id, fields in page:
                start = _text(entry_id)
                message = self._decode(fields)
                if message is not None and message.get("method") == "emit":
                    found.append((start, message))
            if len(page) < REPLAY_PAGE:
                return found
        return None
