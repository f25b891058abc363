"""``docs/grafana/adaptd.json`` charts only what ``GET /metrics`` exports: every metric
name in a panel's PromQL is one the daemon's mapping emits, and a real daemon's scrape
shows each of them (but the families that appear only after a key eviction)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, wait_until
from prometheus_client.parser import text_string_to_metric_families

from adaptd.daemon import metrics
from adaptd.daemon.config import Settings, Tenant
from adaptd.daemon.testing import InProcessDaemon
from adaptd.streams.events import new_id

DASHBOARD = REPO / "docs" / "grafana" / "adaptd.json"
OPS = "tok-grafana-ops-4e1b90"
METRIC = re.compile(r"\badaptd_[a-z0-9_]+\b")
#: Families a daemon exports only once something happened (a tenant's key evicted or
#: refused at its cap): checked against the mapping, not against a fresh daemon's scrape.
ONLY_AFTER_EVENTS = {"adaptd_processor_keys_evicted_total", "adaptd_processor_keys_refused_total"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def exprs(doc: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template queries."""
    out = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return out


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def full_stats() -> dict[str, Any]:
    """A stats dict with every figure the mapping reads (processors, alert sinks, tenants)."""
    figures = dict.fromkeys(metrics.PROCESSOR_FIGURES, 1)
    figures.update({key: {"acme": 1} for key in metrics.PROCESSOR_TENANT_FIGURES})
    return {
        **dict.fromkeys(metrics.INGEST_COUNTERS, 1), "tenants": {"acme": dict.fromkeys(metrics.INGEST_COUNTERS, 1)},
        "log_end_offset": 10, "log_start_offset": 0, "log_truncated_bytes": 0, "log_write_faults": 0,
        "log_write_failing": None, "projector_position": 10, "projector_lag": 0, "projector_errors": 0,
        "events_projected": 10, "store": {"dead_letters_stored": 0, "dead_letters_expired": 0},
        "processors": {**dict.fromkeys(metrics.PROCESSOR_RUNTIME, 1), "processors": {"history": figures}},
        "alerts": {"lag": 0, "signals": 1, "errors": 0,
                   "sinks": [{"sink": "file", "name": "alerts.jsonl", **dict.fromkeys(metrics.SINK_FIGURES, 1)}]},
        "ready": True, "uptime_s": 1.0,
    }


def test_every_metric_the_dashboard_charts_is_one_the_daemon_exports() -> None:
    exported = sample_names(metrics.exposition(full_stats).decode())
    used = {name for expr in exprs(dashboard()) for name in METRIC.findall(expr)}
    assert len(used) >= 30, sorted(used)
    assert used <= exported, f"not exported by daemon/metrics.py: {sorted(used - exported)}"


def test_every_panel_has_a_query_on_the_datasource_and_a_place_of_its_own() -> None:
    doc = dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        box = p["gridPos"]
        mine = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert box["x"] + box["w"] <= 24 and not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"] and all(METRIC.search(t["expr"]) for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"


@pytest.fixture
def daemon(tmp_path: Path, inprocess_daemon: Callable[..., InProcessDaemon]) -> InProcessDaemon:
    """Processors on, a file alert sink, tenant ``ops`` (admin) that posted a few events."""
    settings = Settings(data_dir=tmp_path / "data", log_level="warning",
                        tenants=[Tenant(name="ops", tokens=[OPS], admin=True)],
                        alerts={"files": [{"path": str(tmp_path / "alerts.jsonl")}]},
                        processors={"snapshot_every_records": 1})  # snapshot_position appears after one
    d = inprocess_daemon(settings)
    events = [{"id": str(new_id()), "kind": "execution", "program": "qa", "duration_ms": 5.0,
               "ts": dt.datetime.now(dt.UTC).isoformat()} for _ in range(5)]
    answer = httpx.post(f"{d.url}/v1/events", json=events, headers={"Authorization": f"Bearer {OPS}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return d


def test_a_real_daemons_scrape_has_every_series_the_dashboard_charts(daemon: InProcessDaemon) -> None:
    used = {name for expr in exprs(dashboard()) for name in METRIC.findall(expr)} - ONLY_AFTER_EVENTS

    def scraped() -> set[str]:
        text = httpx.get(f"{daemon.url}/metrics", headers={"Authorization": f"Bearer {OPS}"}, timeout=30).text
        return sample_names(text)

    try:  # the processors and the alert dispatcher report once they have run a step
        names = wait_until(lambda: s if used <= (s := scraped()) else None, timeout=30)
    except AssertionError:
        names = scraped()
    assert used <= names, f"a real daemon does not export: {sorted(used - names)}"
