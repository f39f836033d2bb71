"""Presence events: every announced presence change, delivered beyond the socket.

One event per change that ``presence:update`` subscribers get (see
docs/events.md): to the ``presence_changed`` plugin hook in this process, to a
signed webhook, and (Redis backend) to the Redis stream that the presence
script appends to in the same atomic step that decides the change.

Webhook delivery is at-least-once. With a backend that writes a stream, the
senders of all nodes read it through one consumer group, acknowledge after a
2xx and take over a dead node's pending entries after ``claim_after``. Other
backends deliver from a bounded in-process queue, lost if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from redis.exceptions import RedisError, ResponseError

from . import metrics
from .backend import PresenceBackend
from .config import Config, ConfigError, WebhookConfig
from .plugin_manager import FAILING_PLUGIN_ATTR, PerPlugin, PluginHost, await_me_maybe
from .presence_model import PublicView
from .redis_connect import close_redis, connect_redis, is_cluster
from .tasks import cancel_task

log = logging.getLogger("sanic_rt.events")

SIGNATURE_HEADER = "Sanic-RT-Signature"
MIN_WEBHOOK_SECRET_BYTES = 32
#: the longest wait a receiver's Retry-After may ask for, s
MAX_RETRY_AFTER = 600.0
#: how long one XREADGROUP waits for new entries, ms
READ_BLOCK_MS = 1000
#: on a Cluster (no blocking read over several slots): pause between empty reads, s
CLUSTER_POLL_SECONDS = 0.1
#: the sender's connections (per master on a Cluster): reads, acks and claims in turn
SENDER_CONNECTIONS = 4
#: pause after a failed read of the stream (Redis down), s
READ_RETRY_DELAY = 1.0


def presence_event(change: PublicView) -> dict[str, Any]:
    """The event of one announced change; the Redis script writes the same JSON."""
    if not change.online:
        kind = "presence.offline"
    elif not change.was_online:
        kind = "presence.online"
    else:
        kind = "presence.status"
    return {
        "id": f"{change.user_id}:{change.seq}",
        "type": kind,
        "user_id": change.user_id,
        "online": change.online,
        "status": change.status,
        "last_seen": change.last_seen,
        "seq": change.seq,
        "at": change.at,
    }


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Sanic-RT-Signature`` header value of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_secret(config: Config) -> str:
    hook = config.events.webhook
    if hook.secret:
        return hook.secret
    if not hook.secret_file:
        return ""
    try:
        return Path(hook.secret_file).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(
            config.source, "events.webhook.secret_file", f"unreadable ({err.strerror})"
        ) from None


def check_events_config(config: Config, backend: PresenceBackend) -> None:
    """Cross-key checks of ``[events]``; raise :class:`ConfigError`."""
    src, hook = config.source, config.events.webhook
    if config.events.stream.enabled and backend.event_stream_keys() is None:
        raise ConfigError(
            src,
            "events.stream.enabled",
            f'the {backend.name!r} backend writes no event stream; use presence.backend = "redis"',
        )
    if not hook.url:
        return
    parts = urlsplit(hook.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(src, "events.webhook.url", "expected an http:// or https:// URL")
    secret = webhook_secret(config)
    if not secret:
        raise ConfigError(src, "events.webhook.secret", "a webhook needs secret or secret_file")
    if config.production and len(secret.encode()) < MIN_WEBHOOK_SECRET_BYTES:
        raise ConfigError(
            src,
            "events.webhook.secret",
            f"production needs a webhook secret of >= {MIN_WEBHOOK_SECRET_BYTES} bytes",
        )
    if hook.retry_backoff_max < hook.retry_backoff:
        raise ConfigError(src, "events.webhook.retry_backoff_max", "must be >= retry_backoff")


@dataclass
class WebhookStats:
    """Plain counters of webhook delivery (events, not batches), in this process.

    The same counts go to ``sanic_rt_webhook_events_total`` and
    ``sanic_rt_webhook_retries_total`` (docs/operations.md).
    """

    delivered: int = 0
    #: answered with a 4xx other than 429: dropped, logged once per batch
    rejected: int = 0
    #: still failing after max_attempts: dropped, logged once per batch
    failed: int = 0
    retries: int = 0
    #: dropped because the in-process queue was full (memory, memcached)
    queue_dropped: int = 0


def _retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); 0 if none."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class WebhookPoster:
    """POSTs one batch until a 2xx, a 4xx (other than 429) or ``max_attempts``."""

    def __init__(self, hook: WebhookConfig, secret: str, stats: WebhookStats) -> None:
        self.hook, self.secret, self.stats = hook, secret, stats
        parts = urlsplit(hook.url)
        # Logged instead of the URL, which may carry credentials.
        self.target = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"
        self._session: Any = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(
        self, events: list[dict[str, Any]], keep_alive: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Deliver or drop ``events``; ``keep_alive`` is awaited before each retry."""
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        delay = self.hook.retry_backoff
        for attempt in range(1, self.hook.max_attempts + 1):
            outcome, wait = await self._post(body)
            if outcome == "ok":
                self.stats.delivered += len(events)
                metrics.webhook_events("delivered", len(events))
                return
            if outcome == "rejected":
                self.stats.rejected += len(events)
                metrics.webhook_events("dropped_4xx", len(events))
                log.warning("webhook %s rejected %d events: %s", self.target, len(events), wait)
                return
            if attempt == self.hook.max_attempts:
                break
            self.stats.retries += 1
            metrics.webhook_retry()
            # Full jitter over the upper half: nodes retrying together spread out.
            pause = max(min(delay, self.hook.retry_backoff_max) * random.uniform(0.5, 1.0), wait)
            delay *= 2
            if keep_alive is not None:
                await keep_alive()
            await asyncio.sleep(pause)
        self.stats.failed += len(events)
        metrics.webhook_events("failed", len(events))
        log.error(
            "webhook %s: %d events dropped after %d attempts",
            self.target,
            len(events),
            self.hook.max_attempts,
        )

    async def _post(self, body: bytes) -> tuple[str, Any]:
        """("ok" | "retry" | "rejected", seconds to wait at least, or the rejection)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=self.hook.timeout)
        try:
            async with self._session.post(
                self.hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            log.debug("webhook %s: %s", self.target, type(err).__name__)
            return "retry", 0.0
        if 200 <= status < 300:
            return "ok", 0.0
        if status == 429 or status >= 500:
            return "retry", retry_after
        return "rejected", f"HTTP {status}"


class QueueWebhookSender:
    """Delivers from a bounded in-process queue: lost if the process dies.

    For backends without an event log (memory, Memcached). When the queue is
    full the oldest events are dropped and counted.
    """

    def __init__(self, poster: WebhookPoster, hook: WebhookConfig) -> None:
        self.poster, self.hook = poster, hook
        self.queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, event: dict[str, Any]) -> None:
        if len(self.queue) >= self.hook.queue_max:
            self.queue.popleft()
            self.poster.stats.queue_dropped += 1
            metrics.webhook_events("dropped_queue_full", 1)
        self.queue.append(event)
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_task(self._task)
        await self.poster.close()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                n = min(len(self.queue), self.hook.batch_max)
                batch = [self.queue.popleft() for _ in range(n)]
                try:
                    await self.poster.deliver(batch)
                except Exception:  # a bug here must not stop every later delivery
                    log.exception("webhook %s: %d events lost", self.poster.target, n)


Entry = tuple[str, str, dict[str, Any]]  # (stream key, entry id, event)


def _entries(reply: Any) -> list[Entry]:
    """An XREADGROUP reply ([[key, [(entry id, {field: value})]]] in bytes) as entries."""
    return [
        (key.decode(), entry_id.decode(), json.loads(fields[b"event"]))
        for key, entries in reply or []
        for entry_id, fields in entries
        if fields
    ]


class StreamWebhookSender:
    """Delivers from the backend's event streams through one consumer group.

    Every node runs one; the group hands each entry to one of them. An entry
    is acknowledged after its batch got a 2xx (or was dropped); a node that
    dies leaves its entries pending, and another node claims them once they
    have been idle ``claim_after`` seconds. While a batch is being retried its
    entries are re-claimed by their holder, so a live node keeps them.
    """

    def __init__(self, poster: WebhookPoster, config: Config, keys: list[str]) -> None:
        self.poster, self.hook, self.keys = poster, config.events.webhook, keys
        redis_cfg = config.presence.redis
        self.redis: Any = connect_redis(
            redis_cfg.url,
            max_connections=SENDER_CONNECTIONS,
            connect_timeout=redis_cfg.connect_timeout,
            # A blocking read holds the socket for READ_BLOCK_MS on purpose.
            timeout=redis_cfg.timeout + READ_BLOCK_MS / 1000,
        )
        # On a Cluster each shard's stream is in its own slot: no multi-key read.
        self.per_key = is_cluster(self.redis)
        self.group = self.hook.group
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._task: asyncio.Task[None] | None = None
        self._next_claim = 0.0
        self._warned = 0.0
        self._groups_ready = False

    async def start(self) -> None:
        """Create the group before the node serves, so that it sees every change from now on.

        With Redis down the loop creates it later, from the streams' start:
        old events may then come again (receivers drop them by id or seq).
        """
        try:
            await self.ensure_groups("$")
            self._groups_ready = True
            await self._forget_idle_consumers()
        except (RedisError, OSError, TimeoutError) as err:
            log.warning("presence event stream unavailable: %s: %s", type(err).__name__, err)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_task(self._task)
        await self.poster.close()
        await close_redis(self.redis)

    async def ensure_groups(self, start: str) -> None:
        """Create the group on every shard's stream (``start``: where a new group begins)."""
        for key in self.keys:
            try:
                await self.redis.xgroup_create(key, self.group, id=start, mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    async def _forget_idle_consumers(self) -> None:
        """Drop consumers of earlier processes that hold nothing, so the group stays small."""
        for key in self.keys:
            for consumer in await self.redis.xinfo_consumers(key, self.group):
                idle_s = consumer["idle"] / 1000
                if consumer["pending"] == 0 and idle_s > self.hook.claim_after:
                    await self.redis.xgroup_delconsumer(key, self.group, consumer["name"])

    async def _run(self) -> None:
        while True:
            try:
                if not self._groups_ready:
                    await self.ensure_groups("0")
                    self._groups_ready = True
                batch = await self._claim() or await self._read()
                for i in range(0, len(batch), self.hook.batch_max):
                    await self._deliver(batch[i : i + self.hook.batch_max])
            except ResponseError as err:
                if "NOGROUP" in str(err):
                    # Redis lost the stream (restarted empty): everything in it is new.
                    await self._quietly(self.ensure_groups("0"))
                    continue
                await self._pause(err)
            except (RedisError, OSError, TimeoutError) as err:
                await self._pause(err)
            except Exception:  # a bug here must not stop every later delivery
                log.exception("presence event sender failed; retrying")
                await asyncio.sleep(READ_RETRY_DELAY)

    async def _quietly(self, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except (RedisError, OSError, TimeoutError) as err:
            await self._pause(err)

    async def _pause(self, err: Exception) -> None:
        if time.monotonic() - self._warned > 10:
            self._warned = time.monotonic()
            log.warning("presence event stream unavailable: %s: %s", type(err).__name__, err)
        await asyncio.sleep(READ_RETRY_DELAY)

    async def _read(self) -> list[Entry]:
        if self.per_key:
            return await self._read_each_key()
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.keys, ">"),
            count=self.hook.batch_max,
            block=READ_BLOCK_MS,
        )
        return _entries(reply)

    async def _read_each_key(self) -> list[Entry]:
        """One XREADGROUP per shard stream, pipelined (one round trip per master).

        A blocking read cannot wait on several slots, so these do not block: with
        nothing new the sender waits CLUSTER_POLL_SECONDS before it asks again.
        """
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys:
            pipe.xreadgroup(self.group, self.consumer, {key: ">"}, count=self.hook.batch_max)
        found = [entry for reply in await pipe.execute() for entry in _entries(reply)]
        if not found:
            await asyncio.sleep(CLUSTER_POLL_SECONDS)
        return found

    async def _claim(self) -> list[Entry]:
        """Entries another consumer left pending for ``claim_after`` (it died)."""
        if time.monotonic() < self._next_claim:
            return []
        min_idle = int(self.hook.claim_after * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys:
            pipe.xautoclaim(key, self.group, self.consumer, min_idle, count=self.hook.batch_max)
        found: list[Entry] = []
        for key, (_next, entries, *_deleted) in zip(self.keys, await pipe.execute(), strict=True):
            found += [(key, i.decode(), json.loads(f[b"event"])) for i, f in entries if f]
        # Claim again at once while there is a backlog, else every claim_after / 4.
        self._next_claim = 0.0 if found else time.monotonic() + self.hook.claim_after / 4
        return found

    async def _deliver(self, batch: list[Entry]) -> None:
        by_key: dict[str, list[Any]] = {}
        for key, entry_id, _event in batch:
            by_key.setdefault(key, []).append(entry_id)
        held_since = time.monotonic()

        async def keep_alive() -> None:
            # Reset the entries' idle time so that no other node claims them.
            nonlocal held_since
            if time.monotonic() - held_since < self.hook.claim_after / 3:
                return
            pipe = self.redis.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xclaim(key, self.group, self.consumer, 0, ids, justid=True)
            with contextlib.suppress(Exception):
                await pipe.execute()
            held_since = time.monotonic()

        await self.poster.deliver([event for _k, _i, event in batch], keep_alive)
        pipe = self.redis.pipeline(transaction=False)
        for key, ids in by_key.items():
            pipe.xack(key, self.group, *ids)
        await pipe.execute()


class PresenceEvents:
    """Hands every announced change to the hook and the webhook sender, if any.

    Lives on ``app.ctx.events``; ``webhook_stats`` holds the delivery counters.
    """

    def __init__(self, config: Config, backend: PresenceBackend, plugins: PluginHost) -> None:
        check_events_config(config, backend)
        self.plugins = plugins
        self.webhook_stats = WebhookStats()
        self.queue: QueueWebhookSender | None = None
        self.sender: QueueWebhookSender | StreamWebhookSender | None = None
        hook = config.events.webhook
        if hook.url:
            poster = WebhookPoster(hook, webhook_secret(config), self.webhook_stats)
            keys = backend.event_stream_keys()
            if keys is None:
                self.sender = self.queue = QueueWebhookSender(poster, hook)
            else:
                self.sender = StreamWebhookSender(poster, config, keys)

    async def start(self) -> None:
        if self.sender is not None:
            await self.sender.start()

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.close()

    async def dispatch(self, changes: list[PublicView]) -> None:
        """Called once per announced change set; never raises."""
        hooked = bool(self.plugins.pm.hook.presence_changed.get_hookimpls())
        if not hooked and self.queue is None:
            return
        for change in changes:
            event = presence_event(change)
            if self.queue is not None:
                self.queue.put(event)
            if hooked:
                await self._call_hooks(dict(event))  # a copy: plugins may change theirs

    async def _call_hooks(self, event: dict[str, Any]) -> None:
        """Through pluggy (wrappers and ordering apply); each awaitable is awaited on its own.

        A plugin's bug must never break presence: the change is already decided.
        An implementation raising at once ends that call, as pluggy does; one
        failing in its coroutine does not keep the others from theirs.
        """
        try:
            results = self.plugins.pm.hook.presence_changed(
                event=event, settings=PerPlugin(self.plugins.settings_for)
            )
        except Exception as err:
            _log_hook_failure(err)
            return
        for result in results:
            try:
                await await_me_maybe(result)
            except Exception as err:
                _log_hook_failure(err)


def _log_hook_failure(err: Exception) -> None:
    plugin = getattr(err, FAILING_PLUGIN_ATTR, "?")
    log.error("plugin %r failed in presence_changed", plugin, exc_info=err)
