"""Routing policy cost: events folded per second and time per table evaluation.

Usage: .venv/bin/python bench/routing_policy_bench.py [--runs 3] [--events 40000]

1. fold: an open-loop stream of lm_call + feedback events (3 routes, 200 calls/s of
   event time, 2 % errors) folded in batches of 1000; events per second of wall time
   (includes the evaluations it triggers: about one Thompson evaluation per second of
   event time once min_samples outcomes arrived).
2. evaluate: one constrained Thompson evaluation (2000 samples) for 3 and 10 routes.
Prints the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.adaptation.policy import PolicyConfig, RoutingPolicy

US = 1_000_000


def stream(n: int, routes: list[str], seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []
    i = 0
    while len(out) < n:
        t = i * US // 200
        route = rng.choice(routes)
        ok = rng.random() > 0.02
        execution = str(uuid.UUID(int=rng.getrandbits(128)))
        out.append({"kind": "lm_call", "id": str(uuid.UUID(int=rng.getrandbits(128))), "ts": t, "program": "p",
                    "route": route, "status": "ok" if ok else "error", "duration_ms": 80 + 40 * rng.random(),
                    "cost_usd": 0.001, "execution_id": execution})
        out.append({"kind": "feedback", "id": str(uuid.UUID(int=rng.getrandbits(128))), "ts": t,
                    "execution_id": execution, "score": rng.random()})
        i += 1
    return out[:n]


def policy(k: int) -> RoutingPolicy:
    routes = [RouteConfig(name=f"r{i}", model=f"m{i}") for i in range(k)]
    return RoutingPolicy([ProgramRouting(program="p", routes=routes, min_change_interval_s=5,
                                         exploration_floor=0.01)], PolicyConfig())


def bench_fold(n: int) -> float:
    events = stream(n, ["r0", "r1", "r2"])
    p = policy(3)
    state = p.initial_state()
    start = time.perf_counter()
    for i in range(0, n, 1000):
        state, _ = p.fold(state, events[i:i + 1000])
    return n / (time.perf_counter() - start)


def bench_evaluate(k: int, reps: int = 200) -> float:
    p = policy(k)
    state, _ = p.fold(p.initial_state(), stream(2000, [f"r{i}" for i in range(k)]))
    ps = state.programs[("default", "p")]
    start = time.perf_counter()
    for _ in range(reps):
        p._publish(ps, ps.clock_us, "bench", [], force=False)
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=40_000)
    args = ap.parse_args()
    fold = [bench_fold(args.events) for _ in range(args.runs)]
    ev3 = [bench_evaluate(3) for _ in range(args.runs)]
    ev10 = [bench_evaluate(10) for _ in range(args.runs)]
    print(f"fold: {statistics.median(fold):,.0f} events/s (median of {args.runs}; runs {[round(x) for x in fold]})")
    print(f"evaluate, 3 routes: {statistics.median(ev3):.3f} ms (runs {[round(x, 3) for x in ev3]})")
    print(f"evaluate, 10 routes: {statistics.median(ev10):.3f} ms (runs {[round(x, 3) for x in ev10]})")


if __name__ == "__main__":
    main()
