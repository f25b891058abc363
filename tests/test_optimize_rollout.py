"""Rollout: the margin gate, the slot state, the canary verdict, and an automatic rollback
in a real daemon when live quality of the canary is worse."""

from __future__ import annotations

import datetime as dt
import random

import httpx
from conftest import wait_until
from optimize_kit import example_file, live_request, post, timeline, wait_job, write_config

from adaptd.daemon.optimize.records import SOURCE
from adaptd.daemon.optimize.rollout import canary_verdict, fold, gate, is_quality_drift, reoptimize_decision
from adaptd.streams.events import new_id


def _ev(action: str, route: str | None, offset: int, source: str = SOURCE, **details) -> dict:
    return {"action": action, "route": route, "log_offset": offset, "source": source, "ts": "2026-11-22T00:00:00+00:00",
            "details": details}


def test_the_gate_promotes_only_a_gain_of_at_least_the_margin():
    assert gate(0.60, 0.65, 0.05)[0] and gate(0.6, 0.9, 0.05)[0]
    ok, why = gate(0.60, 0.64, 0.05)
    assert not ok and "+0.040 < margin 0.050" in why
    assert gate(None, 0.9, 0.05) == (False, "no devset scores")


def test_slots_swap_roles_at_each_promotion_and_a_rollback_ends_the_canary():
    st = fold(["blue", "green"], [])
    assert (st.live, st.candidate, st.phase) == ("blue", "green", "idle")
    events = [_ev("reserve", "green", 1), _ev("program_version", "green", 2, version="v1", path="p1"),
              _ev("canary", "green", 3, version="v1", job_id="j1")]
    st = fold(["blue", "green"], events)
    assert st.phase == "canary" and st.canary_version == "v1" and st.canary_offset == 3 and st.reserved
    st = fold(["blue", "green"], events + [_ev("promote", "green", 4), _ev("rollback", "blue", 5),
                                           _ev("rollout_promoted", "green", 6)])
    assert (st.live, st.candidate, st.phase) == ("green", "blue", "idle")
    assert st.to_dict()["live_version"] == "v1"
    policy = fold(["blue", "green"], events + [_ev("rollback", "green", 4, source="adaptd.policy")])
    assert policy.phase == "canary" and policy.policy_rolled_back  # until we record it
    done = fold(["blue", "green"], events + [_ev("rollback", "green", 4, source="adaptd.policy"),
                                             _ev("rollout_rolled_back", "green", 5)])
    assert done.phase == "idle" and done.live == "blue"


def test_the_canary_verdict_waits_for_samples_then_promotes_or_rolls_back():
    kw = {"policy_rolled_back": False, "min_samples": 20, "tolerance": 0.0, "waited_s": 10, "timeout_s": 600}
    assert canary_verdict((5, 1.0), (50, 0.4), **kw)[0] == "wait"
    assert canary_verdict((20, 0.9), (80, 0.5), **kw)[0] == "promote"
    verdict, why = canary_verdict((20, 0.4), (80, 0.5), **kw)
    assert verdict == "rollback" and "0.400 (n=20) < live 0.500" in why
    assert canary_verdict((20, 0.45), (80, 0.5), **{**kw, "tolerance": 0.1})[0] == "promote"
    assert canary_verdict((3, 1.0), (80, 0.5), **{**kw, "waited_s": 601})[0] == "rollback"
    assert canary_verdict(None, None, **{**kw, "policy_rolled_back": True})[0] == "rolled_back"


def test_only_drift_signals_naming_quality_trigger_reoptimization():
    assert is_quality_drift({"signal_type": "drift", "metric": "inputs.q.len", "explanation": {"drifted": ["quality"]}})
    assert is_quality_drift({"signal_type": "drift", "metric": "quality", "explanation": {}})
    assert not is_quality_drift({"signal_type": "drift", "metric": "duration_ms", "explanation": {"drifted": []}})
    assert not is_quality_drift({"signal_type": "anomaly", "metric": "quality", "explanation": {}})


def test_a_drift_incident_reoptimizes_once_within_the_minimum_interval_and_not_over_a_running_job():
    kw = {"handled": set(), "job_statuses": ["succeeded"], "canary_version": None, "now_s": 10_000.0,
          "min_interval_s": 3600.0}
    assert reoptimize_decision("i1", last_auto_s=None, **kw) == (True, None)
    assert reoptimize_decision("i1", last_auto_s=10_000.0 - 3601, **kw) == (True, None)
    assert reoptimize_decision("i1", **{**kw, "handled": {"i1"}}, last_auto_s=None) == (False, None)
    go, why = reoptimize_decision("i2", last_auto_s=10_000.0 - 60, **kw)
    assert not go and why == "last automatic run 60 s ago (min_interval_s 3600)"
    assert reoptimize_decision("i3", **{**kw, "job_statuses": ["running"]}, last_auto_s=None) == (
        False, "a job of the program is unfinished")
    assert reoptimize_decision("i4", **{**kw, "canary_version": "v2"}, last_auto_s=None)[1] == (
        "canary v2 is still being judged")


def _steps(client: httpx.Client) -> list[tuple[str, str | None]]:
    return [(i["what"], i["route"]) for i in timeline(client)
            if i["kind"] == "adaptation" and i["source"] == "adaptd.optimize"]


def test_a_canary_whose_live_quality_is_worse_is_rolled_back_automatically(daemon_factory, tmp_path):
    files = {"trainset": example_file(tmp_path / "train.jsonl", "symbols", 8, seed=1),
             "devset": example_file(tmp_path / "dev.jsonl", "symbols", 12, seed=2)}
    # The policy's own judge needs 1000 canary outcomes here: the verdict is the optimizer's.
    config = write_config(tmp_path / "adaptd.toml", min_samples=1000,
                          optimize={**files, "routes": ["blue", "green"], "canary_share": 0.5, "min_live_samples": 12})
    daemon = daemon_factory(config=config).start()
    rng = random.Random(3)
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        wait_until(lambda: ("reserve", "green") in _steps(client), timeout=30)
        job = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "BootstrapFewShot"}).json()
        assert wait_job(client, job["job_id"])["status"] == "succeeded"
        wait_until(lambda: ("canary", "green") in _steps(client), timeout=30)
        wait_until(lambda: client.get("/v1/routing/toy").json()["routes"][1]["weight"] == 0.5, timeout=30)
        for _ in range(30):  # bounded; users score the new version badly (a scripted live regression)
            table = client.get("/v1/routing/toy").json()
            events = []
            for _ in range(10):
                route, p = live_request(rng, table)
                now, exe = dt.datetime.now(dt.UTC).isoformat(), str(new_id())
                events += [
                    {"id": exe, "kind": "execution", "program": "toy", "route": route, "ts": now},
                    {"id": str(new_id()), "kind": "route_decision", "program": "toy", "route": route, "ts": now,
                     "execution_id": exe, "policy_version": table["version"], "probability": p},
                    {"id": str(new_id()), "kind": "feedback", "execution_id": exe, "ts": now,
                     "score": 0.2 if route == "green" else 0.9},
                ]  # fmt: skip
            post(client, events)
            if ("rollout_rolled_back", "green") in _steps(client):
                break
        # Thirty rounds hold enough canary samples; the verdict may still be on its way.
        steps = wait_until(lambda: (lambda s: s if ("rollout_rolled_back", "green") in s else None)(_steps(client)),
                           timeout=30)
        weights = wait_until(lambda: (lambda w: w if w["green"] == 0.0 else None)(
            {r["name"]: r["weight"] for r in client.get("/v1/routing/toy").json()["routes"]}), timeout=30)
        state = client.get("/v1/optimization/programs/toy").json()
    assert steps[-4:] == [("program_version", "green"), ("canary", "green"), ("rollback", "green"),
                          ("rollout_rolled_back", "green")]
    assert weights == {"blue": 1.0, "green": 0.0}
    assert state["slots"]["live_route"] == "blue" and state["live_version"] == "base"
    assert state["slots"]["phase"] == "idle"
