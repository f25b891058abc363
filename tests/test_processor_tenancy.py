"""Processors keep tenants apart and their state bounded (issue 14, items 4 and 9).

- Every join and dedupe is per tenant: another tenant's feedback naming an execution id,
  or its events reusing an id, change nothing of the first tenant's figures (in the
  history, drift and routing-policy processors, and end to end in a real daemon).
- A cap on keys per tenant: a flood of new program names from one tenant is refused (or
  evicts that tenant's idle keys) and never touches another tenant's keys.
- Eviction is decided in event time: the same log, run twice and cut into other batches,
  gives the very same derived events and the same evictions and refusals.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.adaptation.policy import RoutingPolicy
from adaptd.daemon.adaptation.policy_state import PolicyConfig
from adaptd.streams.events import new_id
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.anomaly.error_burst import BurstConfig, ErrorBurstProcessor
from adaptd.streams.processors.anomaly.processor import AnomalyConfig, AnomalyProcessor
from adaptd.streams.processors.base import NO_WATERMARK, EventBatch, to_us
from adaptd.streams.processors.drift.processor import DriftProcessor, DriftProcessorConfig
from adaptd.streams.processors.history.processor import HistoryProcessor
from adaptd.streams.processors.runtime import ProcessorRuntime
from adaptd.streams.processors.windows import watermarks

try:
    from conftest import DaemonProcess, wait_until
except ImportError:  # tests/ imported as a package
    from tests.conftest import DaemonProcess, wait_until

BASE = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
LATENESS_US = 5_000_000


def ev(kind: str, t: float, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    """An event of ``kind`` at ``BASE + t`` s for ``tenant`` (program ``qa`` unless given)."""
    event: dict[str, Any] = {"id": str(new_id()), "ts": BASE + dt.timedelta(seconds=t), "kind": kind,
                             "tenant": tenant}
    if kind in ("execution", "lm_call"):
        event["program"] = "qa"
    return {**event, **fields}


def fold(proc: Any, events: list[dict], cuts: tuple[int, ...] = (), until_s: float | None = None) -> tuple[Any, list]:
    """Feed ``events`` to a source processor in batches cut at ``cuts``; then, with
    ``until_s``, move the watermark to ``BASE + until_s``.  Returns (state, outputs)."""
    state, high, out = proc.initial_state(), NO_WATERMARK, []
    bounds = [0, *cuts, len(events)]
    for a, b in zip(bounds, bounds[1:]):
        batch = EventBatch.from_events(events[a:b], columns=getattr(proc, "columns", ()))
        batch.wm, high = watermarks(batch.ts, batch.append_ms, high, LATENESS_US, None)
        state, emitted = proc.process(state, batch, high - LATENESS_US)
        out += emitted
    if until_s is not None:
        state, emitted = proc.process(state, EventBatch.empty(), to_us(BASE) + int(until_s * 1e6))
        out += emitted
    return state, out


def quality(windows: list[dict], tenant: str, size: str = "1m") -> list[tuple[int, float | None]]:
    return [(w["quality_n"], w["quality_mean"]) for w in windows
            if w["tenant"] == tenant and w["window_size"] == size and w["quality_n"]]


# ---------------------------------------------------------------- joins and dedupe per tenant


def test_feedback_from_another_tenant_naming_an_execution_id_does_not_change_its_quality_windows() -> None:
    run = ev("execution", 1.0)
    events = [run, ev("feedback", 2.0, execution_id=run["id"], score=1.0),
              ev("feedback", 3.0, tenant="beta", execution_id=run["id"], score=0.0),
              ev("execution", 200.0)]
    for cuts in ((), (1,), (2, 3)):
        state, out = fold(HistoryProcessor(), events, cuts, until_s=7200)
        assert quality(out, "acme") == [(1, 1.0)]
        assert quality(out, "beta") == []
        assert state.feedback_unmatched == 1


def test_an_id_another_tenant_used_first_is_not_taken_for_a_resend() -> None:
    shared = str(new_id())
    events = [ev("execution", 1.0, tenant="beta", id=shared, program="other"),
              ev("execution", 2.0, id=shared), ev("feedback", 3.0, execution_id=shared, score=0.5),
              ev("execution", 2.5, id=shared), ev("execution", 200.0)]  # the last-but-one: acme's own re-send
    state, out = fold(HistoryProcessor(), events, until_s=7200)
    acme = [w for w in out if w["tenant"] == "acme" and w["program"] == "qa" and w["window_size"] == "1m"]
    assert [(w["count"], w["quality_n"], w["quality_mean"]) for w in acme][0] == (1, 1, 0.5)
    assert state.duplicates == 1


def test_drift_joins_and_dedupes_within_a_tenant_only() -> None:
    shared = str(new_id())
    events = [ev("execution", 1.0, tenant="beta", id=shared, program="other"),
              ev("execution", 2.0, id=shared),
              ev("feedback", 3.0, execution_id=shared, score=0.9),
              ev("feedback", 4.0, tenant="beta", execution_id=shared, score=0.0),  # joins beta's own run
              ev("feedback", 5.0, tenant="gamma", execution_id=shared, score=0.0)]  # gamma has no such run
    state, _ = fold(DriftProcessor(), events)
    assert (state.executions, state.duplicates, state.scores, state.feedback_unmatched) == (2, 0, 2, 1)
    acme, beta = (state.per_key[state.index[k]] for k in (("acme", "qa"), ("beta", "other")))
    assert (acme.scores, beta.scores) == (1, 1)


def _policy(max_joins: int) -> RoutingPolicy:
    routes = [RouteConfig(name=n, model=f"model-{n}") for n in ("a", "b")]
    return RoutingPolicy([ProgramRouting(program="qa", routes=routes, min_samples=20)],
                         PolicyConfig(max_joins=max_joins))


def test_one_tenants_volume_does_not_push_another_tenants_feedback_joins_out_of_the_policy() -> None:
    policy = _policy(max_joins=10)
    acme_run = str(new_id())
    events = [ev("lm_call", 0.0, route="a", execution_id=acme_run)]
    events += [ev("lm_call", 0.1 + i / 100, tenant="beta", route="b", execution_id=str(new_id())) for i in range(50)]
    events += [ev("feedback", 1.0, execution_id=acme_run, score=1.0),
               ev("feedback", 1.1, tenant="beta", execution_id=acme_run, score=0.0)]
    state, _ = policy.fold(policy.initial_state(), events)
    assert state.feedback == 1 and state.ignored == 1
    assert policy.metrics(state)["joins_dropped"] == {"beta": 40}
    assert state.programs[("acme", "qa")].stats["a"].quality_mean() is not None
    assert state.programs[("beta", "qa")].stats["b"].quality_mean() is None


# ---------------------------------------------------------------- the key cap


def _flood(tenant: str, names: int, t0: float, step: float = 0.01) -> list[dict]:
    return [ev("execution", t0 + i * step, tenant=tenant, program=f"flood-{i:05d}") for i in range(names)]


def test_a_flood_of_new_program_names_is_refused_within_its_tenant_and_never_evicts_another_tenants_keys() -> None:
    proc = HistoryProcessor(("10s", "1m"), max_keys_per_tenant=5)
    acme = [ev("execution", 1.0 + i, program=f"p{i}") for i in range(3)]
    later = [ev("execution", 30.0 + i, program=f"q{i}") for i in range(2)]
    events = acme + _flood("beta", 200, 5.0) + later
    state, out = fold(proc, events, cuts=(2, 50, 120), until_s=7200)
    m = proc.metrics(state)
    assert m["keys_refused"] == {"beta": 195} and m["keys_evicted"] == {}
    assert state.budget.counts == {"acme": 5, "beta": 5}
    acme_programs = sorted({w["program"] for w in out if w["tenant"] == "acme"})
    assert acme_programs == ["p0", "p1", "p2", "q0", "q1"]
    assert len({w["program"] for w in out if w["tenant"] == "beta"}) == 5


def test_idle_keys_make_room_for_new_ones_in_their_own_tenant_only() -> None:
    proc = HistoryProcessor(("10s", "1m"), max_keys_per_tenant=3, key_idle_s=60)
    events = [ev("execution", 0.0, program="a0"), ev("execution", 1.0, program="a1")]
    events += [ev("execution", 2.0 + i, tenant="beta", program=f"b{i}") for i in range(3)]
    events += [ev("execution", 100.0 + i, program="a0") for i in range(3)]  # acme's a0 stays busy
    events += [ev("execution", 200.0 + i, tenant="beta", program=f"c{i}") for i in range(4)]
    events += [ev("feedback", 210.0, tenant="beta", execution_id=events[2]["id"], score=1.0)]  # an evicted key's run
    state, out = fold(proc, events, until_s=7200)
    m = proc.metrics(state)
    # beta: b0..b2 idle (last seen 2-4 s, watermark ~195 s) make room for c0..c2; c3 finds no idle key
    assert m["keys_evicted"] == {"beta": 3} and m["keys_refused"] == {"beta": 1}
    assert sorted(k[1] for k in state.keys.index if k[0] == "beta") == ["c0", "c1", "c2"]
    assert sorted(k[1] for k in state.keys.index if k[0] == "acme") == ["a0", "a1"]
    assert state.feedback_unmatched == 1
    assert sum(w["count"] for w in out if w["tenant"] == "acme" and w["window_size"] == "1m") == 5


def _workload(seed: int = 7) -> list[dict]:
    """Two tenants over 40 minutes: acme steady on three programs with errors and scores;
    beta rotating through many short-lived program names (evictions and refusals)."""
    rng = random.Random(seed)
    events: list[dict] = []
    for minute in range(40):
        for i in range(60):
            t = minute * 60 + i
            run = ev("execution", t, program=f"p{i % 3}", route="r", duration_ms=rng.uniform(5, 50),
                     status="error" if rng.random() < (0.4 if 20 <= minute < 23 else 0.02) else "ok",
                     inputs={"q": "x" * rng.randint(1, 40)})
            events.append(run)
            if i % 4 == 0:
                events.append(ev("feedback", t + 0.5, execution_id=run["id"], score=rng.random()))
        for j in range(8):  # a fresh batch of names every minute: the old ones go idle
            events.append(ev("execution", minute * 60 + j * 7 + 0.3, tenant="beta",
                             program=f"m{minute}-{j}", duration_ms=10.0, inputs={"q": "y"}))
    events.sort(key=lambda e: e["ts"])
    return events


def _processors() -> list:
    return [
        HistoryProcessor(("10s", "1m"), max_keys_per_tenant=6, key_idle_s=120),
        ErrorBurstProcessor(BurstConfig(max_keys_per_tenant=6, key_idle_s=660)),
        DriftProcessor(DriftProcessorConfig(window="1m", min_executions=20, max_window_periods=2,
                                            max_keys_per_tenant=6, key_idle_s=240)),
        AnomalyProcessor(AnomalyConfig(max_keys_per_tenant=5, key_idle_s=120, warmup=5)),
    ]


def _rerun(log: FileLog, batch: int) -> tuple[list[dict], dict[str, Any]]:
    collected: list[bytes] = []
    rt = ProcessorRuntime(log, _processors(), batch=batch, max_future_s=None, emit=collected.extend)
    for _ in range(100_000):
        if not rt.step():
            break
    return [orjson.loads(v) for v in collected], rt.stats()["processors"]


def test_evictions_and_refusals_are_the_same_in_any_batching_and_on_a_rerun(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "log")
    try:
        log.append([orjson.dumps({**e, "ts": e["ts"].isoformat()}) for e in _workload()])
        first, stats = _rerun(log, 1000)
        again, stats_again = _rerun(log, 1000)
        small, stats_small = _rerun(log, 37)
    finally:
        log.close()
    assert first == again
    # other batch cuts interleave the processors' outputs differently, never change them
    assert sorted(first, key=lambda e: e["id"]) == sorted(small, key=lambda e: e["id"])
    assert stats == stats_again == stats_small
    for name in ("history", "error_burst", "drift", "anomaly"):
        assert stats[name]["keys_evicted"].get("beta", 0) > 0, (name, stats[name])
        assert "acme" not in stats[name]["keys_evicted"] and "acme" not in stats[name]["keys_refused"]
    assert any(stats[name]["keys_refused"].get("beta", 0) for name in ("history", "drift", "anomaly"))
    assert {e["kind"] for e in first} >= {"window", "signal"}


# ---------------------------------------------------------------- end to end

TOKENS = {"acme": "tok-acme-0123456789", "beta": "tok-beta-0123456789"}
CONFIG = "".join(f'[[tenants]]\nname = "{name}"\ntokens = ["{token}"]\n\n' for name, token in TOKENS.items())


def test_another_tenants_feedback_on_an_execution_id_leaves_its_history_alone_in_a_real_daemon(tmp_path: Path) -> None:
    (tmp_path / "adaptd.toml").write_text(CONFIG)
    daemon = DaemonProcess(tmp_path / "data", config=tmp_path / "adaptd.toml",
                           env={"ADAPTD_TEST_TOKEN": TOKENS["acme"]}).start()
    try:
        base = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(second=0, microsecond=0)
        run_id = str(uuid.uuid4())

        def post(tenant: str, events: list[dict]) -> None:
            body = [{**e, "ts": (base + dt.timedelta(seconds=e["t"])).isoformat()} for e in events]
            for e in body:
                e.pop("t")
            answer = httpx.post(f"{daemon.url}/v1/events", json=body, timeout=10,
                                headers={"Authorization": f"Bearer {TOKENS[tenant]}"})
            assert answer.status_code == 200 and answer.json()["accepted"] == len(body), answer.text

        post("acme", [{"id": run_id, "kind": "execution", "program": "qa", "t": 1, "duration_ms": 5.0},
                      {"id": str(uuid.uuid4()), "kind": "feedback", "execution_id": run_id, "score": 1.0, "t": 2}])
        post("beta", [{"id": str(uuid.uuid4()), "kind": "feedback", "execution_id": run_id, "score": 0.0, "t": 3},
                      {"id": str(uuid.uuid4()), "kind": "execution", "program": "qa", "t": 200}])
        post("acme", [{"id": str(uuid.uuid4()), "kind": "execution", "program": "qa", "t": 200}])

        def acme_window() -> dict | None:
            items = httpx.get(f"{daemon.url}/v1/history", params={"program": "qa", "window": "1m"}, timeout=10,
                              headers={"Authorization": f"Bearer {TOKENS['acme']}"}).json()["items"]
            first = [w for w in items if w["window_start"] == base.isoformat()]
            return first[0] if first else None

        window = wait_until(acme_window, timeout=30)
        assert (window["count"], window["quality_n"], window["quality_mean"]) == (1, 1, 1.0)
    finally:
        daemon.stop()


@pytest.mark.parametrize("cap", [1, 2])
def test_the_cap_bounds_keys_per_tenant_not_in_total(cap: int) -> None:
    proc = HistoryProcessor(("10s",), max_keys_per_tenant=cap, key_idle_s=3600)
    events = [ev("execution", float(i), tenant=f"t{i % 4}", program=f"p{i}") for i in range(40)]
    state, _ = fold(proc, events)
    assert state.budget.counts == {f"t{i}": cap for i in range(4)} and len(state.keys) == 4 * cap
    assert proc.metrics(state)["keys_refused"] == {f"t{i}": 10 - cap for i in range(4)}
