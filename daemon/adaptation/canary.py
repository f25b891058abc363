"""Judging a canary against the incumbent: the automatic rollback test (pure).

A canary route serves a fixed share until an operator promotes it or rolls it back;
the policy also rolls it back by itself when, after ``min_samples`` outcomes of its
own, its delivered quality (success rate x quality, the same measure the bandit
maximises when quality is all that counts) is worse than the best incumbent's with
posterior probability ``>= confidence``.  It never promotes by itself: a better canary
is the operator's call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptd.daemon.adaptation.posteriors import RouteStats


def delivered_draws(s: RouteStats, rng: np.random.Generator, samples: int, with_quality: bool) -> np.ndarray:
    """Posterior draws of success rate x quality (quality left out when ``with_quality``
    is False)."""
    draws = rng.beta(1.0 + s.ok, 1.0 + max(s.n - s.ok, 0.0), size=samples)
    if with_quality:
        draws = draws * rng.beta(1.0 + s.q_sum, 1.0 + max(s.q_n - s.q_sum, 0.0), size=samples)
    return draws


def prob_worse(canary: RouteStats, incumbents: Sequence[RouteStats], rng: np.random.Generator,
               samples: int = 2000, margin: float = 0.0) -> tuple[float, int]:
    """The posterior probability that ``canary`` delivers less than the best incumbent
    (by posterior mean) minus ``margin``, and that incumbent's index.  No incumbents:
    ``(0.0, -1)``.

    The margin matters when both are near perfect: a canary with 12 successes out of 12
    is below an incumbent with 300 out of 300 with probability ~0.96 under uniform
    priors, only because it has fewer samples; "worse by at least ``margin``" is not."""
    if not incumbents:
        return 0.0, -1
    with_quality = canary.q_n > 0 and any(s.q_n > 0 for s in incumbents)

    def mean(s: RouteStats) -> float:
        q = s.quality_mean() if with_quality else 1.0
        return s.success_mean() * (q if q is not None else 0.5)

    best = max(range(len(incumbents)), key=lambda i: (mean(incumbents[i]), -i))
    c = delivered_draws(canary, rng, samples, with_quality)
    b = delivered_draws(incumbents[best], rng, samples, with_quality)
    return float((c < b - margin).mean()), best
