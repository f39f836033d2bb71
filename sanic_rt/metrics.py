"""Prometheus metrics: every ``sanic_rt_*`` series, and cheap ways to count into them.

The core counts through the module-level functions below (one call per event,
connect, presence change, backend call, HTTP request); each returns at once when
metrics are off. Labelled children are cached in dicts, so counting an event is
two dict lookups and two updates, not a ``labels()`` call.

Label values are bounded: namespaces are the registered ones, an event without a
handler counts as ``unknown``, results and refusal codes come from the fixed set
of error codes, HTTP routes are route templates. No user id, token or free text.

With several workers, prometheus-client's multiprocess mode sums the workers:
:func:`prepare_multiprocess` creates its directory (and the parent removes it) before
any worker imports prometheus-client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from .envelope import ERROR_CODES

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: how often the event-loop lag is sampled, s
LOOP_LAG_INTERVAL = 1.0
UNKNOWN_EVENT = "unknown"
OTHER = "other"
UNMATCHED_ROUTE = "unmatched"
REFUSAL_CODES = ERROR_CODES | {"too_many_connections"}
PRESENCE_STATUSES = frozenset({"online", "offline", "away", "dnd", "invisible"})
#: what became of each webhook event (sanic_rt_webhook_events_total's result label)
WEBHOOK_RESULTS = ("delivered", "dropped_4xx", "dropped_queue_full", "failed")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def prepare_multiprocess() -> str:
    """Create a fresh directory for prometheus-client's multiprocess mode, in the env.

    Called by the parent before workers are spawned: they inherit the variable and
    so import prometheus-client in multiprocess mode. Returns the directory.
    """
    path = tempfile.mkdtemp(prefix="sanic-rt-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def cleanup_multiprocess(path: str) -> None:
    """Remove the directory :func:`prepare_multiprocess` made."""
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Series:
    """The metric objects, created once per process."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        p = "sanic_rt_"
        self.connections = Gauge(
            p + "connections",
            "Open namespace connections on this node",
            ["namespace"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.online_users = Gauge(
            p + "online_users",
            "Online users cluster-wide (backend stats, refreshed every stats_interval)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.connects = Counter(
            p + "connects", "Accepted namespace connections", ["namespace"], registry=registry
        )
        self.refusals = Counter(
            p + "connect_refusals",
            "Refused namespace connections",
            ["namespace", "code"],
            registry=registry,
        )
        self.events = Counter(
            p + "events",
            "Events handled, by result (ok or the error code)",
            ["namespace", "event", "result"],
            registry=registry,
        )
        self.event_duration = Histogram(
            p + "event_duration_seconds",
            "Time to handle an event, ack included",
            ["namespace", "event"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.transitions = Counter(
            p + "presence_transitions",
            "Presence changes announced (on the node that announced them)",
            ["status"],
            registry=registry,
        )
        self.backend_duration = Histogram(
            p + "backend_op_duration_seconds",
            "Presence backend calls",
            ["backend", "op"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.backend_errors = Counter(
            p + "backend_errors",
            "Presence backend calls that failed (unavailable)",
            ["backend", "op"],
            registry=registry,
        )
        self.http_requests = Counter(
            p + "http_requests",
            "HTTP requests served by Sanic, by route template",
            ["route", "status"],
            registry=registry,
        )
        self.cluster_emit_errors = Counter(
            p + "cluster_emit_errors",
            "Publishes to the cluster bus that failed (refused, reset or timed out)",
            registry=registry,
        )
        self.webhook_events = Counter(
            p + "webhook_events",
            "Presence events delivered to the webhook or dropped, by result",
            ["result"],
            registry=registry,
        )
        for result in WEBHOOK_RESULTS:  # all four from the start: rate() sees the first drop
            self.webhook_events.labels(result)
        self.webhook_retries = Counter(
            p + "webhook_retries",
            "Webhook POSTs retried (timeout, connection error, 5xx or 429)",
            registry=registry,
        )
        self.rate_limited = Counter(
            p + "rate_limited",
            "Events answered rate_limited",
            ["namespace"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            p + "event_loop_lag_seconds",
            f"How late a {LOOP_LAG_INTERVAL:g} s timer fires (sampled)",
            registry=registry,
            buckets=LAG_BUCKETS,
        )


class PendingCount:
    """A counter child's increments, kept as a plain int until the next flush."""

    __slots__ = ("child", "count")

    def __init__(self, child: Any) -> None:
        self.child, self.count = child, 0

    def flush(self) -> None:
        if self.count:
            self.child.inc(self.count)
            self.count = 0


class PendingHistogram:
    """A histogram child's observations, bucketed locally until the next flush.

    prometheus-client takes a lock per bucket and per sum on every ``observe``
    (and in multiprocess mode writes an mmap each time); on the event path that
    was most of the metrics cost. The flush adds our counts into the child's
    ``_buckets``/``_sum`` values: prometheus-client internals (``Histogram``
    in prometheus_client/metrics.py, stable since 0.4; pinned below 1.0, and
    tests/test_metrics.py fails if the counts stop arriving, and
    tests/test_upstream_overrides.py if they differ from ``Histogram.observe``'s).
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # The first bucket whose bound is >= seconds, as Histogram.observe picks it.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        for i, n in enumerate(counts):
            if n:
                self.child._buckets[i].inc(n)
                counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


class _EventSeries:
    __slots__ = ("duration", "event", "results")

    def __init__(self, event: str, duration: PendingHistogram) -> None:
        self.event, self.duration = event, duration
        self.results: dict[str, PendingCount] = {}


class Recorder:
    """Counts into :class:`Series`, caching labelled children."""

    def __init__(self, series: Series) -> None:
        self.s = series
        self._events: dict[tuple[str, str], _EventSeries] = {}
        self._connections: dict[str, Any] = {}
        self._backend: dict[tuple[str, str], tuple[PendingHistogram, Any]] = {}
        self._routes: dict[str, str] = {}
        #: every local accumulator, flushed into prometheus-client by :meth:`flush`
        self._pending: list[PendingCount | PendingHistogram] = []

    def _track(self, pending: Any) -> Any:
        self._pending.append(pending)
        return pending

    def flush(self) -> None:
        """Move the locally kept counts into the series (before a scrape, and every second)."""
        for pending in self._pending:
            pending.flush()

    def event(
        self,
        namespace: str,
        event: str,
        reply: Any,
        seconds: float,
        is_known: Callable[[str, str], bool],
    ) -> None:
        series = self._events.get((namespace, event))
        if series is None:
            series = self._event_series(namespace, event, is_known)
        result = _result_of(reply)
        counter = series.results.get(result)
        if counter is None:
            child = self.s.events.labels(namespace, series.event, result)
            counter = series.results[result] = self._track(PendingCount(child))
        counter.count += 1
        series.duration.observe(seconds)
        if result == "rate_limited":
            self.s.rate_limited.labels(namespace).inc()

    def _event_series(
        self, namespace: str, event: str, is_known: Callable[[str, str], bool]
    ) -> _EventSeries:
        # Only events with a handler get their own label and cache entry: a client
        # sending made-up names must not grow the series (nor this dict).
        name = event if is_known(namespace, event) else UNKNOWN_EVENT
        series = self._events.get((namespace, name))
        if series is None:
            duration = self._track(PendingHistogram(self.s.event_duration.labels(namespace, name)))
            series = self._events[(namespace, name)] = _EventSeries(name, duration)
        return series

    def connected(self, namespace: str) -> None:
        self.s.connects.labels(namespace).inc()
        self._gauge(namespace).inc()

    def disconnected(self, namespace: str) -> None:
        self._gauge(namespace).dec()

    def _gauge(self, namespace: str) -> Any:
        gauge = self._connections.get(namespace)
        if gauge is None:
            gauge = self._connections[namespace] = self.s.connections.labels(namespace)
        return gauge

    def refused(self, namespace: str, code: Any) -> None:
        label = code if code in REFUSAL_CODES else "refused"
        self.s.refusals.labels(namespace, label).inc()

    def transitions(self, statuses: Iterable[str]) -> None:
        for status in statuses:
            self.s.transitions.labels(status if status in PRESENCE_STATUSES else OTHER).inc()

    def backend_op(self, backend: str, op: str, seconds: float, failed: bool) -> None:
        key = (backend, op)
        children = self._backend.get(key)
        if children is None:
            children = self._backend[key] = (
                self._track(PendingHistogram(self.s.backend_duration.labels(backend, op))),
                self.s.backend_errors.labels(backend, op),
            )
        children[0].observe(seconds)
        if failed:
            children[1].inc()

    def http_request(self, route_path: str | None, status: int) -> None:
        if route_path is None:
            route = UNMATCHED_ROUTE
        else:
            route = self._routes.get(route_path) or self._routes.setdefault(
                route_path, route_template(route_path)
            )
        self.s.http_requests.labels(route, str(status)).inc()


def _result_of(reply: Any) -> str:
    if type(reply) is dict and reply.get("ok") is False:
        code = reply.get("error", {}).get("code")
        return code if code in ERROR_CODES else OTHER
    return "ok"


_PARAM = re.compile(r"<([^:>]+)(?::[^>]*)?>")


def route_template(route_path: str) -> str:
    """Sanic's ``api/v1/presence/<user_id:str>`` as ``/api/v1/presence/{user_id}``."""
    return "/" + _PARAM.sub(r"{\1}", route_path.lstrip("/"))


# --- the process-wide recorder the core counts into -----------------------------------

_series: Series | None = None
recorder: Recorder | None = None


def enable() -> Recorder:
    """Turn counting on in this process (idempotent); returns the recorder."""
    global _series, recorder
    if recorder is None:
        from prometheus_client import disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call] # a *_created twin of every counter doubles the scrape
        _series = Series()
        recorder = Recorder(_series)
    return recorder


def disable() -> None:
    """Stop counting (the series stay registered); used when ``[metrics] enabled = false``."""
    global recorder
    recorder = None


def event(
    namespace: str, event: str, reply: Any, seconds: float, is_known: Callable[[str, str], bool]
) -> None:
    if recorder is not None:
        recorder.event(namespace, event, reply, seconds, is_known)


def connected(namespace: str) -> None:
    if recorder is not None:
        recorder.connected(namespace)


def disconnected(namespace: str) -> None:
    if recorder is not None:
        recorder.disconnected(namespace)


def refused(namespace: str, code: Any) -> None:
    if recorder is not None:
        recorder.refused(namespace, code)


def presence_changes(changes: Iterable[Any]) -> None:
    if recorder is not None:
        recorder.transitions(c.status if c.online else "offline" for c in changes)


def backend_op(backend: str, coro: Any, seconds: float, failed: bool) -> None:
    if recorder is not None:
        code = getattr(coro, "cr_code", None)
        recorder.backend_op(backend, code.co_name if code else OTHER, seconds, failed)


def http_request(route_path: str | None, status: int) -> None:
    if recorder is not None:
        recorder.http_request(route_path, status)


def webhook_events(result: str, count: int) -> None:
    """``count`` webhook events ended as ``result`` (one of :data:`WEBHOOK_RESULTS`)."""
    if recorder is not None:
        recorder.s.webhook_events.labels(result).inc(count)


def webhook_retry() -> None:
    if recorder is not None:
        recorder.s.webhook_retries.inc()


def cluster_emit_error() -> None:
    if recorder is not None:
        recorder.s.cluster_emit_errors.inc()


def set_online_users(count: int) -> None:
    if recorder is not None:
        recorder.s.online_users.set(count)


def observe_loop_lag(seconds: float) -> None:
    if recorder is not None:
        recorder.s.loop_lag.observe(seconds)


# --- exposition --------------------------------------------------------------------------


def flush() -> None:
    """Publish this process's locally kept counts (call on the event loop's thread)."""
    if recorder is not None:
        recorder.flush()


def exposition() -> tuple[bytes, str]:
    """The text exposition of every series (summed over workers in multiprocess mode)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    path = multiprocess_dir()
    if path is None:
        registry = (recorder or enable()).s.registry
    else:
        registry = _multiprocess_registry(path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _multiprocess_registry(path: str) -> Any:
    from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, multiprocess

    _forget_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    # These two describe the worker that answers the scrape (docs/operations.md).
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def _forget_dead_workers(path: str) -> None:
    # uvicorn restarts a crashed worker; its live gauges must stop counting.
    from prometheus_client import multiprocess

    for name in os.listdir(path):
        match = _LIVE_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- background samplers -------------------------------------------------------------------


async def sample_loop_lag(interval: float = LOOP_LAG_INTERVAL) -> None:
    """Forever: how late a timer of ``interval`` fires on this event loop."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        observe_loop_lag(max(0.0, loop.time() - started - interval))
        flush()  # other workers' counts reach a scrape within a second


async def refresh_online_users(stats: Callable[[], Any], interval: float) -> None:
    """Forever: set ``sanic_rt_online_users`` from the backend's stats every ``interval``."""
    while True:
        with contextlib.suppress(Exception):  # unavailable: keep the last value
            set_online_users((await stats()).online_users)
        await asyncio.sleep(interval)


def now() -> float:
    return time.perf_counter()
