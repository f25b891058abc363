"""``GET /metrics``: the daemon's figures in the Prometheus text format, with the access
rules of ``/v1/stats`` (an admin sees every series, a tenant only its own)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adaptd.daemon.config import Settings, Tenant
from adaptd.daemon.metrics import exposition, metric_families
from adaptd.daemon.testing import InProcessDaemon, wait_until
from adaptd.streams.events import new_id

ACME, BETA, OPS = "tok-metrics-acme-3f9c1a", "tok-metrics-beta-7d20e4", "tok-metrics-ops-b81c55"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _execution(program: str) -> dict:
    return {"id": str(new_id()), "ts": dt.datetime.now(dt.UTC).isoformat(), "kind": "execution",
            "program": program, "duration_ms": 5.0}


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels); raises on invalid text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def tenants_in(samples: Samples) -> set[str]:
    return {v for _, labels in samples for k, v in labels if k == "tenant"}


@pytest.fixture
def daemon(tmp_path: Path, inprocess_daemon: Callable[..., InProcessDaemon]) -> InProcessDaemon:
    """Tenants ``acme`` and ``beta`` (not admins) and ``ops`` (admin); acme posted 3
    events, beta 2, and the projector has caught up."""
    settings = Settings(data_dir=tmp_path / "data", log_level="warning", tenants=[
        Tenant(name="acme", tokens=[ACME]), Tenant(name="beta", tokens=[BETA]),
        Tenant(name="ops", tokens=[OPS], admin=True)])
    d = inprocess_daemon(settings)
    for token, program, n in ((ACME, "acme-program", 3), (BETA, "beta-program", 2)):
        answer = httpx.post(f"{d.url}/v1/events", json=[_execution(program) for _ in range(n)],
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text
    return d


def scrape(daemon: InProcessDaemon, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{daemon.url}/metrics", headers=headers, timeout=30)


def test_an_admin_scrape_is_valid_prometheus_text_with_each_tenants_acked_events(daemon: InProcessDaemon) -> None:
    def projected() -> Samples | None:
        samples = parse(scrape(daemon, OPS).text)
        done = value(samples, "adaptd_projector_lag") == 0 and value(samples, "adaptd_events_projected_total") == 5
        return samples if done else None

    samples = wait_until(projected, timeout=30)
    answer = scrape(daemon, OPS)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    acked = {t: value(samples, "adaptd_events_acked_total", tenant=t) for t in ("acme", "beta", "ops")}
    assert acked == {"acme": 3, "beta": 2, "ops": 0}  # ops is configured: its series is there, at zero
    assert value(samples, "adaptd_batches_acked_total", tenant="acme") == 1
    assert value(samples, "adaptd_log_end_offset") >= 5  # type: ignore[operator]
    assert value(samples, "adaptd_log_write_failing") == 0
    assert value(samples, "adaptd_ready") == 1
    assert value(samples, "adaptd_uptime_seconds") > 0  # type: ignore[operator]
    assert {"adaptd_projector_position", "adaptd_projector_errors_total", "adaptd_processors_lag",
            "adaptd_processor_keys", "adaptd_log_write_faults_total"} <= names(samples)
    assert all(name.startswith("adaptd_") for name in names(samples))


def test_a_tenant_that_is_not_an_admin_sees_only_its_own_series(daemon: InProcessDaemon) -> None:
    wait_until(lambda: value(parse(scrape(daemon, ACME).text), "adaptd_events_acked_total", tenant="acme") == 3)
    answer = scrape(daemon, ACME)
    samples = parse(answer.text)

    assert answer.status_code == 200
    assert tenants_in(samples) == {"acme"}
    assert "beta" not in answer.text
    # nothing global, which would tell about the other tenants' traffic
    assert not {n for n in names(samples) if n.startswith(("adaptd_log_", "adaptd_projector_", "adaptd_processors_"))}
    assert value(samples, "adaptd_ready") == 1 and "adaptd_uptime_seconds" in names(samples)


def test_metrics_need_a_known_bearer_token_when_tenants_are_configured(daemon: InProcessDaemon) -> None:
    assert scrape(daemon, None).status_code == 401
    assert scrape(daemon, "tok-nobody").status_code == 401


def test_without_tenants_configured_metrics_are_open_and_count_the_default_tenant(
    tmp_path: Path, inprocess_daemon: Callable[..., InProcessDaemon]
) -> None:
    d = inprocess_daemon(Settings(data_dir=tmp_path / "data", log_level="warning"))
    assert httpx.post(f"{d.url}/v1/events", json=[_execution("p")], timeout=30).status_code == 200
    samples = parse(scrape(d, None).text)
    assert value(samples, "adaptd_events_acked_total", tenant="default") == 1
    assert "adaptd_log_end_offset" in names(samples)


# ---------------------------------------------------------------------- the pure mapping

def _stats(**overrides: Any) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "scope": "global", "events_acked": 7, "dead_letters": 1, "batches_acked": 3, "requests_refused": 2,
        "dropped": 0, "dead_letters_suppressed": 0, "events_future": 1,
        "store": {"dead_letters_stored": 1, "dead_letters_expired": 0, "dead_letter_max_age_days": 0.0},
        "events_projected": 7, "log_end_offset": 9, "log_start_offset": 0, "log_truncated_bytes": 0,
        "log_write_faults": 0, "log_write_failing": None, "projector_position": 8, "projector_lag": 1,
        "projector_errors": 0, "processors": None, "alerts": None,
        "tenants": {"acme": {"events_acked": 7, "dead_letters": 1, "batches_acked": 3, "requests_refused": 1,
                             "dropped": 0, "dead_letters_suppressed": 0, "events_future": 1}},
        "ready": True, "uptime_s": 12.5,
    }
    return {**stats, **overrides}


def _processors() -> dict[str, Any]:
    return {
        "position": 9, "lag": None, "resumed_at": None, "watermark": None, "records_read": 9, "events": 7,
        "unreadable": 0, "late_events": 0, "outputs": 2, "snapshots": 1, "snapshot_position": 4, "errors": 0,
        "last_error": None,
        "processors": {
            "history": {"events": 7, "keys": 3, "keys_per_tenant_cap": 100, "keys_evicted": {"acme": 2, "beta": 1},
                        "keys_refused": {}, "late": {"1m": 0}},
            "drift": {"error": "state being swapped"},
        },
    }


def _flat(families: list) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def test_the_mapping_gives_configured_tenants_zeros_and_no_family_for_disabled_processors_or_alerts() -> None:
    samples = _flat(metric_families(_stats(), tenants=["acme", "beta"]))

    assert value(samples, "adaptd_events_acked_total", tenant="acme") == 7
    assert value(samples, "adaptd_events_acked_total", tenant="beta") == 0
    assert value(samples, "adaptd_projector_lag") == 1
    assert value(samples, "adaptd_log_write_failing") == 0
    assert value(samples, "adaptd_ready") == 1 and value(samples, "adaptd_uptime_seconds") == 12.5
    assert not {n for n in names(samples) if n.startswith(("adaptd_processor", "adaptd_alert"))}


def test_the_mapping_counts_what_no_tenant_owns_under_an_empty_tenant_label_so_sums_match_the_totals() -> None:
    samples = _flat(metric_families(_stats(), tenants=["acme"]))
    refused = {labels: v for (name, labels), v in samples.items() if name == "adaptd_requests_refused_total"}
    assert sum(refused.values()) == 2
    assert value(samples, "adaptd_requests_refused_total", tenant="") == 1


def test_the_mapping_labels_processor_figures_and_skips_a_processor_that_reported_an_error() -> None:
    samples = _flat(metric_families(_stats(processors=_processors(), log_write_failing="ENOSPC"), tenants=["acme"]))

    assert value(samples, "adaptd_processors_position") == 9
    assert "adaptd_processors_lag" not in names(samples)  # the log could not tell: no sample, not a made-up 0
    assert value(samples, "adaptd_processor_keys", processor="history") == 3
    assert value(samples, "adaptd_processor_keys_evicted_total", processor="history", tenant="beta") == 1
    assert "adaptd_processor_keys_refused_total" not in names(samples)
    assert not {labels for (_, labels) in samples if ("processor", "drift") in labels}
    assert value(samples, "adaptd_log_write_failing") == 1


def test_the_mapping_for_a_tenant_keeps_only_its_labelled_series_and_readiness() -> None:
    families = metric_families(_stats(processors=_processors()), tenants=["beta"], viewer="beta")
    samples = _flat(families)

    assert tenants_in(samples) == {"beta"}
    assert value(samples, "adaptd_events_acked_total", tenant="beta") == 0
    assert value(samples, "adaptd_processor_keys_evicted_total", processor="history", tenant="beta") == 1
    untenanted = {name for name, labels in samples if "tenant" not in dict(labels)}
    assert untenanted == {"adaptd_ready", "adaptd_uptime_seconds"}


def test_an_empty_stats_dict_maps_to_valid_text_without_a_series() -> None:
    text = exposition(dict, tenants=[]).decode()
    assert parse(text) == {}
    assert "# HELP adaptd_events_acked_total" in text  # the families are declared, empty


def test_ten_thousand_programs_add_no_series_so_label_cardinality_stays_bounded(daemon: InProcessDaemon) -> None:
    def series() -> Samples:
        return parse(scrape(daemon, OPS).text)

    def caught_up(expected: int) -> Samples | None:
        samples = series()
        done = value(samples, "adaptd_projector_lag") == 0 and value(samples, "adaptd_events_projected_total") == expected
        return samples if done else None

    before = wait_until(lambda: caught_up(5), timeout=30)
    programs = [f"flood-{i}" for i in range(10_000)]
    for start in range(0, len(programs), 2_000):
        answer = httpx.post(f"{daemon.url}/v1/events", json=[_execution(p) for p in programs[start:start + 2_000]],
                            headers={"Authorization": f"Bearer {ACME}"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["accepted"] == 2_000, answer.text
    after = wait_until(lambda: caught_up(10_005), timeout=120)
    labels = {k for _, pairs in after for k, _ in pairs}
    assert "program" not in labels and not any(v.startswith("flood-") for _, pairs in after for _, v in pairs)
    # a flood of names moves values, not the number of series
    assert len(after) <= len(before) + 20, sorted({name for name, _ in after} - {name for name, _ in before})
