"""End to end in a real daemon: a quality regression of a small DSPy program is detected as
drift, re-optimized on harvested production examples, canaried through the router and
promoted, every step an event in the log."""

from __future__ import annotations

import datetime as dt
import random

import dspy
import httpx
from conftest import wait_until
from optimize_kit import live_request, post, production, timeline, write_config

from adaptd.daemon.demo import toy
from adaptd.streams.events import new_id

WINDOW_S, PER_WINDOW = 10, 60


def _config(tmp_path):
    return write_config(
        tmp_path / "adaptd.toml",
        processors={"drift_window": f"{WINDOW_S}s", "drift_min_executions": PER_WINDOW, "lateness_s": 0},
        optimize={"harvest_threshold": 0.5, "harvest_limit": 150, "budget_lm_calls": 600, "min_interval_s": 0,
                  "routes": ["blue", "green"], "canary_share": 0.3, "min_live_samples": 15},
    )


def _variant(client: httpx.Client, slots: dict, route: str) -> dspy.Module:
    """The program a slot serves: the factory's, or a saved version loaded from the daemon."""
    program = toy.make_program()
    version = slots["bindings"][route]["version"]
    if version not in (None, "base"):
        program.load_state(client.get(f"/v1/optimization/programs/toy/versions/{version}").json())
    return program


def _live_round(client: httpx.Client, rng: random.Random, lm: toy.ToyLM, questions: list[str]) -> None:
    """Serve ``questions`` as the SDK would: a route per request from the routing table,
    its variant run, and execution, route_decision, lm_call and feedback events."""
    table = client.get("/v1/routing/toy").json()
    slots = client.get("/v1/optimization/programs/toy").json()["slots"]
    variants = {r["name"]: _variant(client, slots, r["name"]) for r in table["routes"] if r["weight"] > 0}
    events = []
    for q in questions:
        route, p = live_request(rng, table)
        with dspy.context(lm=lm):
            answer = variants[route](question=q).answer
        now = dt.datetime.now(dt.UTC).isoformat()
        exe = str(new_id())
        events += [
            {"id": exe, "kind": "execution", "program": "toy", "route": route, "ts": now, "duration_ms": 30.0,
             "inputs": {"question": q}, "outputs": {"answer": answer}},
            {"id": str(new_id()), "kind": "route_decision", "program": "toy", "route": route, "ts": now,
             "execution_id": exe, "policy_version": table["version"], "probability": p, "reason": "weighted"},
            {"id": str(new_id()), "kind": "lm_call", "program": "toy", "route": route, "ts": now,
             "execution_id": exe, "model": f"toy/{route}", "duration_ms": 30.0},
            {"id": str(new_id()), "kind": "feedback", "program": "toy", "execution_id": exe, "ts": now,
             "score": float(answer == toy.solve(q))},
        ]  # fmt: skip
    post(client, events)


def _steps(items: list[dict]) -> list[tuple[str, str | None]]:
    return [(i["what"], i["route"]) for i in items if i["kind"] == "adaptation" and i["source"] == "adaptd.optimize"]


def test_a_quality_drift_ends_with_a_reoptimized_version_promoted_through_a_canary(daemon_factory, tmp_path):
    daemon = daemon_factory(config=_config(tmp_path)).start()
    start = dt.datetime.fromtimestamp((int(dt.datetime.now(dt.UTC).timestamp()) // 60 - 30) * 60,
                                      dt.UTC)
    spacing = WINDOW_S / PER_WINDOW
    before = production(toy.questions("words", 6 * PER_WINDOW, seed=1), start, spacing, lm_seed=1)
    regression_start = start + dt.timedelta(seconds=6 * WINDOW_S)
    after = production(toy.questions("symbols", 4 * PER_WINDOW, seed=2), regression_start, spacing, lm_seed=2)
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        wait_until(lambda: ("reserve", "green") in _steps(timeline(client)), timeout=30)
        post(client, before + after)
        # Drift -> re-optimization -> gate -> canary, all by the daemon itself.
        wait_until(lambda: ("canary", "green") in _steps(timeline(client)), timeout=90, interval=0.2)
        rng, lm = random.Random(5), toy.ToyLM(seed=5)
        live = toy.questions("symbols", 400, seed=9)
        for i in range(40):  # bounded: the verdict needs ~15 canary scores at a 0.3 share
            _live_round(client, rng, lm, live[i * 10:(i + 1) * 10])
            steps = _steps(timeline(client))
            if ("rollout_promoted", "green") in steps or ("rollout_rolled_back", "green") in steps:
                break
        # The rounds hold enough canary scores; the verdict may still be on its way.
        items = wait_until(lambda: (lambda t: t if {("rollout_promoted", "green"), ("rollout_rolled_back", "green")}
                                    & set(_steps(t)) else None)(timeline(client)), timeout=30)
        # the policy applies the promotion and the retirement from the log, a moment later
        table = wait_until(lambda: (lambda t: t if t["routes"][0]["weight"] == 0.0 else None)(
            client.get("/v1/routing/toy").json()), timeout=30)
        state = client.get("/v1/optimization/programs/toy").json()
    steps = _steps(items)
    assert steps[-6:] == [("reoptimize", None), ("program_version", "green"), ("canary", "green"),
                          ("promote", "green"), ("rollback", "blue"), ("rollout_promoted", "green")]
    signal = next(i for i in items if i["kind"] == "signal" and i["what"] == "drift:open")
    assert "quality" in signal["details"]["drifted"] and signal["ts"] >= regression_start.isoformat()
    reopt = next(i for i in items if i["kind"] == "adaptation" and i["what"] == "reoptimize")
    runs = [i for i in items if i["kind"] == "optimizer_run"]
    assert [r["status"] for r in runs][0] == "queued" and runs[-1]["status"] == "succeeded"
    assert runs[0]["details"]["incident_id"] == reopt["details"]["incident_id"]
    assert runs[0]["details"]["trigger"] == "drift" and runs[0]["details"]["train_source"] == "harvested"
    assert runs[0]["what"] == "BootstrapFewShot"  # recommended: the budget of 600 LM calls rules out the rest
    offsets = [signal["log_offset"], reopt["log_offset"], runs[0]["log_offset"], runs[-1]["log_offset"]]
    assert offsets == sorted(offsets)
    promoted = next(i for i in items if i["what"] == "rollout_promoted")
    live_q, canary_q = promoted["details"]["live_quality"], promoted["details"]["canary_quality"]
    assert canary_q[0] >= 15 and canary_q[1] > live_q[1] + 0.3
    weights = {r["name"]: r["weight"] for r in table["routes"]}
    assert weights == {"blue": 0.0, "green": 1.0}
    assert state["live_version"] == "v1" and state["slots"]["live_route"] == "green"
