"""Constrained Thompson sampling: each route's probability of being the best route.

``prob_best`` draws ``samples`` joint posterior samples per route (success rate, quality,
mean log latency) from ``RouteStats`` and, per sample, scores every route by the
program's objective::

    utility = w_quality * success * quality - w_cost * cost / cost_scale
              - w_latency * p95 / latency_scale

and picks the best route among those that meet the soft constraints in that sample
(p95 <= ``latency_slo_ms``, success * quality >= ``min_quality``) and are not *slowed
down* (mean latency above ``slowdown_factor`` x the route's own baseline) while
another route that is not slowed down meets the constraints with quality within
``slowdown_quality_margin`` of the best; when no route meets the constraints, the route
that misses them by the least.  The share of samples a route wins is its
probability of being best.  Costs are point estimates (prices are known, not noisy);
the hard cost ceiling is applied by the caller before this.  Randomness comes only from
the ``numpy.random.Generator`` passed in, so a seeded generator gives the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.posteriors import RouteStats


@dataclass(frozen=True)
class Evidence:
    """What the allocation saw of one route (for reasons and explanations)."""

    n: float
    success: float
    quality: float | None
    p95_ms: float | None
    cost: float | None
    prob_best: float
    feasible: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready, rounded to 4 significant digits."""
        def r(x: float | None) -> float | None:
            return None if x is None else float(f"{x:.4g}")
        return {"n": r(self.n), "success": r(self.success), "quality": r(self.quality), "p95_ms": r(self.p95_ms),
                "cost": r(self.cost), "prob_best": r(self.prob_best), "feasible": r(self.feasible)}


def prob_best(names: Sequence[str], stats: Sequence[RouteStats], costs: Sequence[float | None],
              routing: ProgramRouting, rng: np.random.Generator, samples: int = 2000) -> dict[str, Evidence]:
    """Each route's probability of being best under ``routing``'s objective and soft
    constraints, from ``samples`` Thompson draws.

    Returns:
        name -> ``Evidence``, probabilities summing to 1.  No routes: an empty dict.
    """
    k = len(names)
    if k == 0:
        return {}
    w = routing.objective
    ok = np.array([s.ok for s in stats])
    n = np.array([s.n for s in stats])
    success = rng.beta(1.0 + ok, 1.0 + np.maximum(n - ok, 0.0), size=(samples, k))
    quality = np.ones((samples, k))
    if any(s.q_n > 0 for s in stats):  # no route has feedback: quality does not discriminate
        qs = np.array([s.q_sum for s in stats])
        qn = np.array([s.q_n for s in stats])
        quality = rng.beta(1.0 + qs, 1.0 + np.maximum(qn - qs, 0.0), size=(samples, k))
    delivered = success * quality

    lat = [s.log_latency() for s in stats]
    known = [x for x in lat if x is not None]
    p95 = np.zeros((samples, k))
    slow = np.zeros((samples, k), dtype=bool)
    if known:
        fill = (float(np.mean([m for m, _ in known])), float(np.mean([sd for _, sd in known])))
        mu = np.array([(x or fill)[0] for x in lat])
        sd = np.array([(x or fill)[1] for x in lat])
        lat_n = np.array([max(s.lat_n, 1.0) for s in stats])
        draws = rng.standard_normal((samples, k)) * (np.maximum(sd, 0.05) / np.sqrt(lat_n)) + mu
        p95 = np.exp(draws + 1.645 * sd)
        if routing.slowdown_factor:  # None or 0: off
            for i, s in enumerate(stats):
                base = s.baseline()
                now = lat[i]
                # the point estimate, not the draws: the model restarted on a change the
                # change test already judged significant, from few samples
                if base is not None and now is not None and now[0] - base[0] > np.log(routing.slowdown_factor):
                    slow[:, i] = True
    known_costs = [c for c in costs if c is not None]
    cost = np.array([c if c is not None else (float(np.mean(known_costs)) if known_costs else 0.0) for c in costs])

    cost_scale = routing.max_cost_per_call or (float(cost.max()) if cost.max() > 0 else 1.0)
    lat_scale = routing.latency_slo_ms or (float(p95.mean()) if known else 1.0)
    utility = (w.get("quality", 0.0) * delivered - w.get("cost", 0.0) * cost[None, :] / cost_scale
               - w.get("latency", 0.0) * p95 / lat_scale)

    miss = np.zeros((samples, k))
    if routing.latency_slo_ms is not None and known:
        miss += np.maximum(p95 / routing.latency_slo_ms - 1.0, 0.0)
    if routing.min_quality is not None:
        miss += np.maximum(routing.min_quality - delivered, 0.0) / max(routing.min_quality, 1e-9)
    feasible = miss == 0
    if slow.any():
        # a slowed-down route is out of a sample where a route that is not slow meets the
        # constraints there and delivers, on the posterior means, quality within the
        # margin of the best route's (means: a margin judged per draw would let the slow
        # route win every sample where the stand-in's quality happens to draw low)
        mean = np.array([s.success_mean() * (s.quality_mean() or 1.0) for s in stats])
        near = mean >= mean.max() - routing.slowdown_quality_margin
        stand_in = feasible & ~slow & near[None, :]
        feasible = feasible & ~(slow & stand_in.any(axis=1, keepdims=True))
    # feasible routes compete on utility; when none is feasible the least miss wins
    score = np.where(feasible, utility, -np.inf)
    none = ~feasible.any(axis=1)
    winners = np.where(none, np.argmin(miss, axis=1), np.argmax(score, axis=1))
    wins = np.bincount(winners, minlength=k) / samples
    return {
        name: Evidence(n=s.n, success=s.success_mean(), quality=s.quality_mean(), p95_ms=s.p95_ms(),
                       cost=c, prob_best=float(wins[i]), feasible=float(feasible[:, i].mean()))
        for i, (name, s, c) in enumerate(zip(names, stats, costs))
    }
