"""Off-policy backtest: coverage and width of the 95 % intervals of IPS, SNIPS and DR.

Usage: .venv/bin/python bench/backtest_bench.py [--seeds 200] [--policy-seeds 40] [--bootstrap 0]

Two simulations whose true value is known (both from tests/test_backtest.py):

1. ``known propensities``: 1500 decisions, logging and target probabilities drawn per
   decision, route success means drifting over time; truth = the target's expected
   success over those decisions.
2. ``real policy logs``: 1200 calls routed by the real routing policy (exploration floor
   0.15), outcomes of 3 routes drawn from fixed means; the target config (floor 0.03,
   objective quality + latency) re-run over the log; truth per metric = the target's
   expected value over those decisions under the true route means.

Prints, per simulation, estimator and metric: coverage (share of seeds whose interval
contains the truth), median interval width, and median absolute error (deterministic:
seeded), then the wall-time throughput of the policy re-run + join (events per second).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_backtest import FAST, TARGET, build_units, simulate_log, simulate_units, true_values  # noqa: E402

from adaptd.daemon.adaptation import backtest as bt  # noqa: E402

ESTIMATORS = ("ips", "snips", "dr")


def _score(rows: dict[tuple[str, str], list[tuple[bool, float, float]]], result: bt.Backtest,
           truth: dict[str, float]) -> None:
    for metric, m in result.metrics.items():
        for name in ESTIMATORS:
            e = getattr(m, name)
            if e is not None:
                rows.setdefault((metric, name), []).append((e.low <= truth[metric] <= e.high, e.high - e.low,
                                                            abs(e.value - truth[metric])))


def _print(title: str, rows: dict[tuple[str, str], list[tuple[bool, float, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'metric':12} {'estimator':9} {'runs':>5} {'coverage':>9} {'median width':>13} {'median |error|':>15}")
    for (metric, name), r in rows.items():
        cov = sum(c for c, _, _ in r) / len(r)
        print(f"{metric:12} {name:9} {len(r):5d} {cov:9.1%} {statistics.median(w for _, w, _ in r):13.4g}"
              f" {statistics.median(a for _, _, a in r):15.4g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200, help="runs of the known-propensity simulation")
    ap.add_argument("--policy-seeds", type=int, default=40, help="runs of the real-policy simulation")
    ap.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples (0: normal intervals)")
    args = ap.parse_args()

    def run(units: list[bt.Unit], seed: int, metrics: tuple[str, ...]) -> bt.Backtest:
        rng = np.random.default_rng(seed) if args.bootstrap else None
        return bt.estimate(units, metrics=metrics, rng=rng, bootstrap=args.bootstrap)

    rows: dict[tuple[str, str], list[tuple[bool, float, float]]] = {}
    for seed in range(args.seeds):
        units, truth = simulate_units(seed)
        _score(rows, run(units, seed, ("success",)), {"success": truth})
    _print(f"known propensities: {args.seeds} seeds x 1500 decisions (interval: "
           f"{'bootstrap ' + str(args.bootstrap) if args.bootstrap else 'normal'})", rows)

    rows = {}
    ess, rates = [], []
    for seed in range(args.policy_seeds):
        events = simulate_log(seed)
        t0 = time.perf_counter()
        units, _ = build_units(events, program="qa", tenant="default", routing=TARGET, policy=FAST)
        rates.append(len(events) / (time.perf_counter() - t0))
        result = run(units, seed, bt.METRICS)
        ess.append(result.ess)
        _score(rows, result, true_values(units))
    _print(f"real policy logs: {args.policy_seeds} seeds x 1200 calls, target re-run by the policy processor "
           f"(median effective sample size {statistics.median(ess):.0f})", rows)
    print(f"\nre-run of the target policy and join: median {statistics.median(rates):,.0f} events/s (wall time,"
          " one process; on a shared machine)")


if __name__ == "__main__":
    main()
