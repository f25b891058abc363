"""Automatic re-optimization on a scripted quality regression (the toy task, offline).

Per run (one fresh daemon, seed ``s``):

1. *before*: 6 drift windows of production traffic of family ``words`` (the program's own
   format), executions with captured content and exact-match feedback;
2. *regressed*: 4 windows of family ``symbols`` (a new input format the program handles
   badly);
3. the daemon by itself: drift signal -> re-optimization job (recommended optimizer,
   harvested trainset) -> margin gate -> canary on the ``green`` slot;
4. live traffic through the routing table (an SDK-like loop: route per request, variant
   run, route_decision / lm_call / feedback events) until promotion or rollback;
5. *after rollout*: 200 more live requests served by the routing table.

Reports per run and the median over runs: live quality before / regressed / during the
canary per route / after rollout, devset score before / after, the job's LM calls and
cost, the live requests the canary needed, and wall times (regression posted -> drift
signal -> job done -> canary -> promoted).  The traffic's event times are synthetic (a
10 s drift window of 60 executions stands in for the default 5 min / 500), the LM is
``adaptd.daemon.demo.toy.ToyLM`` (no provider), the daemon is a real ``adaptd up``.

Usage: ``python bench/reoptimize_bench.py --runs 3 [--out bench/out/reoptimize.json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dspy
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptd.daemon.demo import toy
from adaptd.streams.events import new_id
from bench.daemon_proc import daemon

WINDOW_S, PER_WINDOW = 10, 60
CONFIG = f"""
[processors]
drift_window = "{WINDOW_S}s"
drift_min_executions = {PER_WINDOW}
lateness_s = 0

[[routing]]
program = "toy"
min_samples = 10
min_change_interval_s = 1
[[routing.routes]]
name = "blue"
model = "toy/blue"
[[routing.routes]]
name = "green"
model = "toy/green"

[[optimize]]
program = "toy"
factory = "adaptd.daemon.demo.toy:make_program"
metric = "adaptd.daemon.demo.toy:exact_match"
lm = "adaptd.daemon.demo.toy:make_lm"
harvest_threshold = 0.5
harvest_limit = 150
budget_usd = 1.0
budget_lm_calls = 600
min_interval_s = 0
routes = ["blue", "green"]
canary_share = 0.3
min_live_samples = 15
"""


def post(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 2000):
        r = client.post("/v1/events", content=orjson.dumps(events[i:i + 2000]))
        r.raise_for_status()


def production(questions: list[str], start: dt.datetime, lm_seed: int) -> tuple[list[dict], float]:
    """Executions and feedback of the toy program (zero-shot) at synthetic event times,
    and their mean quality."""
    program, out, scores = toy.make_program(), [], []
    with dspy.context(lm=toy.ToyLM(seed=lm_seed)):
        for i, q in enumerate(questions):
            answer = program(question=q).answer
            ts = (start + dt.timedelta(seconds=i * WINDOW_S / PER_WINDOW)).isoformat()
            exe, score = str(new_id()), float(answer == toy.solve(q))
            scores.append(score)
            out += [{"id": exe, "kind": "execution", "program": "toy", "ts": ts, "duration_ms": 40.0,
                     "inputs": {"question": q}, "outputs": {"answer": answer}},
                    {"id": str(new_id()), "kind": "feedback", "execution_id": exe, "program": "toy", "ts": ts,
                     "score": score}]
    return out, statistics.fmean(scores)


def timeline(client: httpx.Client) -> list[dict[str, Any]]:
    return client.get("/v1/optimization/programs/toy/timeline").json()["items"]


def steps(items: list[dict[str, Any]]) -> list[str]:
    return [i["what"] for i in items if i["kind"] == "adaptation" and i["source"] == "adaptd.optimize"]


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def live(client: httpx.Client, rng: random.Random, lm: toy.ToyLM, questions: list[str]) -> dict[str, list[float]]:
    """Serve ``questions`` through the routing table; returns the scores per route."""
    table = client.get("/v1/routing/toy").json()
    slots = client.get("/v1/optimization/programs/toy").json()["slots"]
    variants: dict[str, dspy.Module] = {}
    for r in table["routes"]:
        program = toy.make_program()
        version = slots["bindings"][r["name"]]["version"]
        if version not in (None, "base"):
            program.load_state(client.get(f"/v1/optimization/programs/toy/versions/{version}").json())
        variants[r["name"]] = program
    choices = [(r["name"], r["weight"]) for r in table["routes"] if r["weight"] > 0]
    events, scores = [], {}
    for q in questions:
        route, p = rng.choices(choices, weights=[w for _, w in choices])[0]
        with dspy.context(lm=lm):
            answer = variants[route](question=q).answer
        score = float(answer == toy.solve(q))
        scores.setdefault(route, []).append(score)
        now, exe = dt.datetime.now(dt.UTC).isoformat(), str(new_id())
        events += [{"id": exe, "kind": "execution", "program": "toy", "route": route, "ts": now},
                   {"id": str(new_id()), "kind": "route_decision", "program": "toy", "route": route, "ts": now,
                    "execution_id": exe, "policy_version": table["version"], "probability": p},
                   {"id": str(new_id()), "kind": "lm_call", "program": "toy", "route": route, "ts": now,
                    "execution_id": exe, "model": f"toy/{route}"},
                   {"id": str(new_id()), "kind": "feedback", "execution_id": exe, "ts": now, "score": score}]
    post(client, events)
    return scores


def one_run(seed: int) -> dict[str, Any]:
    start = dt.datetime.fromtimestamp((int(time.time()) // 60 - 30) * 60, dt.UTC)
    before, q_before = production(toy.questions("words", 6 * PER_WINDOW, seed=seed), start, seed)
    regressed, q_regressed = production(toy.questions("symbols", 4 * PER_WINDOW, seed=seed + 100),
                                        start + dt.timedelta(seconds=6 * WINDOW_S), seed + 1)
    with daemon(prefix="adaptd-reopt-") as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        wait_for(lambda: "reserve" in steps(timeline(client)), 60, "the slot reservation")
        post(client, before)
        t0 = time.perf_counter()
        post(client, regressed)
        wait_for(lambda: any(i["kind"] == "signal" for i in timeline(client)), 120, "a drift signal")
        t_signal = time.perf_counter() - t0
        wait_for(lambda: "canary" in steps(timeline(client)) or "rollout_rejected" in steps(timeline(client)),
                 300, "the canary")
        t_canary = time.perf_counter() - t0
        jobs = client.get("/v1/optimization/jobs", params={"program": "toy"}).json()["items"]
        job = jobs[0]
        rng, lm = random.Random(seed), toy.ToyLM(seed=seed + 7)
        pool = toy.questions("symbols", 2000, seed=seed + 200)
        canary: dict[str, list[float]] = {}
        served = 0
        while served < 1000 and not {"rollout_promoted", "rollout_rolled_back"} & set(steps(timeline(client))):
            for route, s in live(client, rng, lm, pool[served:served + 10]).items():
                canary.setdefault(route, []).extend(s)
            served += 10
        t_promoted = time.perf_counter() - t0
        outcome = "promoted" if "rollout_promoted" in steps(timeline(client)) else "rolled_back"
        wait_for(lambda: client.get("/v1/routing/toy").json()["routes"][0]["weight"] in (0.0, 1.0), 30, "the table")
        after: list[float] = []
        for i in range(20):
            for s in live(client, rng, lm, pool[1000 + i * 10:1000 + (i + 1) * 10]).values():
                after.extend(s)
    return {
        "seed": seed, "outcome": outcome, "optimizer": job["optimizer"],
        "quality_before": round(q_before, 3), "quality_regressed": round(q_regressed, 3),
        "canary_quality": {r: round(statistics.fmean(v), 3) for r, v in canary.items()},
        "quality_after_rollout": round(statistics.fmean(after), 3),
        "devset_before": job["score_before"], "devset_after": job["score_after"],
        "job_lm_calls": job["lm_calls"], "job_cost_usd": job["cost_usd"], "job_seconds": job["details"]["seconds"],
        "canary_requests": served,
        "s_to_signal": round(t_signal, 2), "s_to_canary": round(t_canary, 2), "s_to_verdict": round(t_promoted, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(CONFIG)
    os.environ["ADAPTD_CONFIG"] = fh.name  # the daemon subprocess reads it
    runs = []
    for seed in range(1, args.runs + 1):
        runs.append(one_run(seed))
        print(json.dumps(runs[-1]), flush=True)
    keys = ["quality_before", "quality_regressed", "quality_after_rollout", "devset_before", "devset_after",
            "job_lm_calls", "job_cost_usd", "job_seconds", "canary_requests", "s_to_signal", "s_to_canary",
            "s_to_verdict"]
    median = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}
    summary = {"runs": runs, "median": median, "outcomes": [r["outcome"] for r in runs]}
    print(json.dumps({"median": median, "outcomes": summary["outcomes"]}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
