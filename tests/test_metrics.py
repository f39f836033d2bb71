"""Prometheus metrics at /metrics: the real server through its CLI, parsed by
prometheus-client's own text parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token
from tests.support.cluster import cluster_config
from tests.support.metrics import samples, scrape, scraped_until, value
from tests.support.procs import Proc, server_process

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "metrics-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("metrics")
    config = base_config(metrics={"stats_interval": 1})
    proc = server_process(tmp, config).start()
    yield proc
    proc.stop()


async def test_series_count_connections_events_presence_backend_and_http(dev_server):
    url = dev_server.url
    client = await Client().connect(url, make_token("mia"))
    try:
        assert (await client.call("ping", {}))["ok"]
        assert (await client.call("chat:join", {"conversation_id": "r1"}))["ok"]
        assert not (await client.call("no:such:event", {}))["ok"]
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(url, "not-a-token")
        await http("GET", f"{url}/api/v1/presence/mia")

        text = await scraped_until(url, lambda t: value(t, "sanic_rt_online_users") == 1)
        assert value(text, "sanic_rt_connections", namespace="/chats") == 1
        assert value(text, "sanic_rt_connects_total", namespace="/chats") == 1
        code = {"namespace": "/chats", "code": "invalid_token"}
        assert value(text, "sanic_rt_connect_refusals_total", **code) == 1
        ok = {"namespace": "/chats", "result": "ok"}
        assert value(text, "sanic_rt_events_total", event="ping", **ok) == 1
        assert value(text, "sanic_rt_events_total", event="chat:join", **ok) == 1
        unknown = {"namespace": "/chats", "event": "unknown", "result": "not_found"}
        assert value(text, "sanic_rt_events_total", **unknown) == 1
        duration = {"namespace": "/chats", "event": "ping"}
        assert value(text, "sanic_rt_event_duration_seconds_count", **duration) == 1
        assert value(text, "sanic_rt_presence_transitions_total", status="online") == 1
        op = {"backend": "memory", "op": "connect"}
        assert value(text, "sanic_rt_backend_op_duration_seconds_count", **op) >= 1
        route = {"route": "/api/v1/presence/{user_id}", "status": "200"}
        assert value(text, "sanic_rt_http_requests_total", **route) == 1
        assert value(text, "sanic_rt_event_loop_lag_seconds_count") is not None
        assert value(text, "process_cpu_seconds_total") is not None
        assert value(text, "python_gc_objects_collected_total") is not None
        # No user id or token in any label.
        assert "mia" not in text and "not-a-token" not in text
    finally:
        await client.close()
    await scraped_until(url, lambda t: value(t, "sanic_rt_connections", namespace="/chats") == 0)
    await scraped_until(
        url, lambda t: value(t, "sanic_rt_presence_transitions_total", status="offline") == 1
    )


async def test_unknown_event_names_cannot_grow_the_label_set(dev_server):
    client = await Client().connect(dev_server.url, make_token("eve"))
    try:
        for n in range(1000):
            ack = await client.call(f"made-up-{n}", {})
            assert ack["error"]["code"] in ("not_found", "rate_limited")
    finally:
        await client.close()
    text = await scrape(dev_server.url)
    events = {s.labels["event"] for s in samples(text) if s.name == "sanic_rt_events_total"}
    assert not any(e.startswith("made-up") for e in events), events
    assert len(events) < 10, events
    assert value(text, "sanic_rt_rate_limited_total", namespace="/chats") is not None


async def test_grafana_dashboard_queries_only_series_that_exist(dev_server):
    dashboard = json.loads((ROOT / "docs/grafana/sanic-rt.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queried = {n for e in exprs for n in re.findall(r"\b(?:sanic_rt|process|python)_\w+", e)}
    assert len(queried) >= 10, queried
    text = await scrape(dev_server.url)
    exposed = {s.name for s in samples(text)} | {
        f.name for f in text_string_to_metric_families(text)
    }
    assert queried <= exposed, sorted(queried - exposed)


def test_operations_doc_lists_every_series(dev_server):
    import urllib.request

    with urllib.request.urlopen(f"{dev_server.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    ours = {f.name for f in text_string_to_metric_families(text) if f.name.startswith("sanic_rt_")}
    doc = (ROOT / "docs/operations.md").read_text()
    missing = [name for name in sorted(ours) if f"`{name}" not in doc]
    assert len(ours) >= 12 and not missing, missing


async def test_production_scrape_needs_an_api_key(start_server):
    config = base_config(server={"mode": "production"}, api={"keys": [API_KEY]})
    server = start_server(config)
    status, body = await http("GET", f"{server.url}/metrics")
    assert status == 401
    assert body["ok"] is False and body["error"]["code"] == "unauthorized"
    assert set(body) == {"ok", "error"} and "sanic_rt" not in json.dumps(body)
    status, _ = await http("GET", f"{server.url}/metrics", api_key="wrong-key")
    assert status == 401
    assert value(await scrape(server.url, API_KEY), "sanic_rt_online_users") is not None


async def test_metrics_can_be_turned_off_or_moved(start_server):
    server = start_server(base_config(metrics={"path": "/internal/prom"}))
    status, _ = await http("GET", f"{server.url}/metrics")
    assert status == 404
    status, text = await http("GET", f"{server.url}/internal/prom")
    assert status == 200 and "sanic_rt_connections" in text
    off = start_server(base_config(metrics={"enabled": False}))
    status, _ = await http("GET", f"{off.url}/metrics")
    assert status == 404


async def test_workers_sum_into_one_scrape_and_the_directory_is_removed(
    redis_proc, tmp_path, monkeypatch, start_server
):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the metrics directory goes
    config = cluster_config(redis_proc, server={"workers": 2, "transports": ["websocket"]})
    server = start_server(config)
    await eventually(
        lambda: len(set(re.findall(r"Started server process \[(\d+)\]", server.log()))) >= 2
    )
    assert len(list(tmp_path.glob("sanic-rt-metrics-*"))) == 1
    made: list[Client] = []
    try:
        for n in range(8):
            made.append(await Client().connect(server.url, make_token(f"w{n}")))
        # Whichever worker answers, it reports the connections of both.
        for _ in range(4):
            text = await scrape(server.url)
            assert value(text, "sanic_rt_connects_total", namespace="/chats") == 8
            assert value(text, "sanic_rt_connections", namespace="/chats") == 8
    finally:
        for client in made:
            await client.close()
    # One start-up summary, from the parent, not one per worker.
    assert len(re.findall(r"sanic-rt \S+ started; mode=dev;.*workers=2", server.log())) == 1
    assert server.stop() == 0
    assert not list(tmp_path.glob("sanic-rt-metrics-*"))


async def test_backend_outage_counts_errors_and_unavailable_acks(redis_proc, start_server):
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    server = start_server(base_config(presence={"backend": "redis", "redis": {"url": url}}))
    client = await Client().connect(server.url, make_token("otto"))
    try:
        redis_proc.kill()

        async def unavailable() -> bool:
            ack = await client.call("ping", {})
            return not ack["ok"] and ack["error"]["code"] == "unavailable"

        await eventually(unavailable)
        text = await scrape(server.url)
        errors = [
            s.value
            for s in samples(text)
            if s.name == "sanic_rt_backend_errors_total" and s.labels["backend"] == "redis"
        ]
        assert sum(errors) >= 1
        failed = {"namespace": "/chats", "event": "ping", "result": "unavailable"}
        assert value(text, "sanic_rt_events_total", **failed) >= 1
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"metrics": {"path": "metrics"}}, "metrics.path"),
        ({"metrics": {"path": "/api/metrics"}}, "metrics.path"),
        ({"dashboard": {"path": "/socket.io/x"}}, "dashboard.path"),
        ({"dashboard": {"path": "/metrics"}}, "dashboard.path"),
    ],
)
def test_bad_paths_exit_2_naming_the_key(tmp_path, section, key):
    import subprocess
    import sys

    from tests.support.procs import write_toml

    path = write_toml(tmp_path / "bad.toml", base_config(**section))
    result = subprocess.run(
        [sys.executable, "-m", "sanic_rt", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and key in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
