"""Off-policy estimates of a routing policy from logged route decisions (pure: no I/O).

A *unit* is one logged first-attempt route decision: the route the client chose, the
probability the logging policy gave it (the propensity), the probability of every route
under the *target* policy at that moment, and the outcomes observed for it (success,
quality, latency, cost; any may be missing).  For each metric this module gives:

- **IPS** (inverse propensity scoring): ``mean(w_i * y_i)`` with ``w_i = pi(a_i) / p_i``;
  unbiased when the propensities are right, high variance when weights are large.
- **SNIPS** (self-normalised IPS): ``sum(w_i y_i) / sum(w_i)``; slightly biased, far
  less variance, and in the metric's own range.
- **DR** (doubly robust): ``mean(sum_a pi_i(a) q(a) + w_i (y_i - q(a_i)))`` with ``q`` a
  per-route mean outcome, *cross-fitted* (unit ``i`` is scored with the means of the
  other folds, so its own outcome never enters its model term); unbiased when the
  propensities are right, whatever ``q``, and lower variance when ``q`` is good.

Each comes with a 95 % interval: by default a normal approximation on the estimator's
influence terms (``value +- z * sd / sqrt(n)``); or a percentile bootstrap over units
with an injected ``numpy.random.Generator``.  The effective sample size is Kish's
``(sum w)^2 / sum w^2``.

The estimate refuses (raises ``Refusal``, whose message says why and what to change)
when the data cannot support it: no units; a propensity missing, zero or below
``min_propensity``; an effective sample size below ``min_ess``; or more than
``max_unsupported`` of the target's mass (mean over units) on routes the logging policy
never chose, about which the log says nothing.  A single metric with too few observed
outcomes is reported as not estimated (with the reason) instead of refusing the rest.

What is estimated: the mean outcome per decision had each decision been drawn from the
target's table at that moment, the table being a function of the logged history (the
target's rule applied to the recorded traffic, not a re-simulation of the closed loop in
which its own choices would have changed later tables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The outcomes estimated, in report order.
METRICS = ("success", "quality", "latency_ms", "cost_usd")
#: Defaults of the refusal rules (see the module docstring).
MIN_PROPENSITY = 0.01
MIN_ESS = 30.0
MAX_UNSUPPORTED = 0.05
#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


class Refusal(ValueError):
    """The data cannot support an estimate; the message says why and what to change."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One logged decision.

    Attributes:
        route: the route the logging policy chose.
        propensity: the probability it had (None when it was not recorded).
        target: route -> probability under the target policy (sums to 1 over routes).
        outcomes: metric -> observed value; a metric not observed is absent.
    """

    route: str
    propensity: float | None
    target: Mapping[str, float]
    outcomes: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its 95 % interval and standard error."""

    value: float
    low: float
    high: float
    se: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "se": self.se}


@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """One metric: the logged (on-policy) mean and the target's IPS / SNIPS / DR estimates.

    ``ips`` / ``snips`` / ``dr`` are None when the metric was not estimated; ``note``
    then says why.
    """

    metric: str
    n: int
    ess: float
    logged_mean: float | None
    ips: Estimate | None = None
    snips: Estimate | None = None
    dr: Estimate | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "n": self.n, "ess": self.ess, "logged_mean": self.logged_mean,
                **{k: (None if e is None else e.to_dict()) for k, e in
                   (("ips", self.ips), ("snips", self.snips), ("dr", self.dr))},
                "note": self.note}


@dataclass(frozen=True, slots=True)
class Backtest:
    """The whole estimate: the weights' summary and one ``MetricEstimate`` per metric."""

    n: int
    ess: float
    mean_weight: float
    max_weight: float
    unsupported_mass: float
    interval: str
    metrics: dict[str, MetricEstimate]

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ess": self.ess, "mean_weight": self.mean_weight, "max_weight": self.max_weight,
                "unsupported_mass": self.unsupported_mass, "interval": self.interval,
                "metrics": {k: m.to_dict() for k, m in self.metrics.items()}}


def ess(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``; 0 for no (or all-zero) weights."""
    sq = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / sq if sq > 0 else 0.0


def check_units(units: Sequence[Unit], *, min_propensity: float = MIN_PROPENSITY) -> None:
    """Refuse units whose propensities cannot weigh them.

    Raises:
        Refusal: no units, or some propensity missing, not finite, zero or below
            ``min_propensity`` (the message counts them and shows the first).
    """
    if not units:
        raise Refusal("no logged route decisions to weigh: nothing was recorded for this program and period")
    missing = [i for i, u in enumerate(units) if u.propensity is None or not math.isfinite(u.propensity)]
    if missing:
        raise Refusal(f"{len(missing)} of {len(units)} decisions have no recorded propensity (probability): "
                      "inverse propensity weights need the probability of every logged choice")
    low = [u.propensity for u in units if u.propensity is not None and u.propensity < min_propensity]
    if low:
        raise Refusal(f"{len(low)} of {len(units)} decisions have a propensity below the floor {min_propensity:g} "
                      f"(smallest {min(low):.3g}): their weights would dominate the estimate; a logging policy "
                      "must keep exploring (exploration_floor) for a backtest to be possible, or pass a lower "
                      "--min-propensity knowingly")


def estimate(units: Sequence[Unit], *, metrics: Sequence[str] = METRICS, min_propensity: float = MIN_PROPENSITY,
             min_ess: float = MIN_ESS, max_unsupported: float = MAX_UNSUPPORTED, folds: int = 2,
             rng: np.random.Generator | None = None, bootstrap: int = 0) -> Backtest:
    """Estimate the target policy's value on ``units`` for each of ``metrics``.

    Args:
        folds: cross-fitting folds of the DR outcome model (units assigned ``i % folds``).
        rng, bootstrap: with ``bootstrap > 0`` (and ``rng`` given) the intervals are
            percentile bootstrap intervals over ``bootstrap`` resamples of the units;
            otherwise normal approximations.

    Returns:
        A ``Backtest``; a metric observed on too few units (effective sample size below
        ``min_ess``) has no estimates and a ``note``.

    Raises:
        Refusal: see ``check_units``; the effective sample size over all units is below
            ``min_ess``; or the target puts more than ``max_unsupported`` of its mass on
            routes no unit chose.
        ValueError: ``folds < 2`` or ``bootstrap > 0`` without ``rng``.
    """
    if folds < 2:
        raise ValueError("folds must be >= 2 (cross-fitting)")
    if bootstrap > 0 and rng is None:
        raise ValueError("a bootstrap needs an injected rng")
    check_units(units, min_propensity=min_propensity)
    w = np.array([u.target.get(u.route, 0.0) / float(u.propensity or 1.0) for u in units])
    n_eff = ess(w)
    logged = {u.route for u in units}
    unsupported = float(np.mean([sum(p for r, p in u.target.items() if r not in logged) for u in units]))
    if unsupported > max_unsupported:
        raise Refusal(f"the target policy sends {unsupported:.1%} of traffic (mean over decisions) to routes the "
                      f"log never chose ({', '.join(sorted({r for u in units for r, p in u.target.items() if p > 0} - logged))}): "
                      "the recorded traffic says nothing about them")
    if n_eff < min_ess:
        raise Refusal(f"effective sample size {n_eff:.1f} of {len(units)} decisions is below {min_ess:g}: the target "
                      "policy differs too much from the logging one (or too little traffic was recorded) for a "
                      "trustworthy estimate; record more traffic or compare a closer policy")
    out: dict[str, MetricEstimate] = {}
    for metric in metrics:
        idx = [i for i, u in enumerate(units) if metric in u.outcomes and math.isfinite(u.outcomes[metric])]
        out[metric] = _metric(metric, [units[i] for i in idx], w[idx], min_ess=min_ess, folds=folds,
                              rng=rng, bootstrap=bootstrap)
    return Backtest(n=len(units), ess=n_eff, mean_weight=float(np.mean(w)), max_weight=float(np.max(w)),
                    unsupported_mass=unsupported, interval=f"bootstrap percentile ({bootstrap})" if bootstrap > 0
                    else "normal (influence terms)", metrics=out)


def _metric(metric: str, units: Sequence[Unit], w: np.ndarray, *, min_ess: float, folds: int,
            rng: np.random.Generator | None, bootstrap: int) -> MetricEstimate:
    n = len(units)
    if n == 0:
        return MetricEstimate(metric, 0, 0.0, None, note=f"no decision has an observed {metric}")
    y = np.array([u.outcomes[metric] for u in units], dtype=float)
    n_eff = ess(w)
    if n_eff < min_ess:
        return MetricEstimate(metric, n, n_eff, float(np.mean(y)),
                              note=f"effective sample size {n_eff:.1f} below {min_ess:g}: not estimated")
    model_term, q_logged = _cross_fit(units, y, folds)
    ips = w * y
    dr = model_term + w * (y - q_logged)
    v_snips = float(np.sum(ips) / np.sum(w))
    if bootstrap > 0 and rng is not None:
        ips_e, dr_e = _boot_mean(ips, rng, bootstrap), _boot_mean(dr, rng, bootstrap)
        snips_e = _boot_ratio(ips, w, rng, bootstrap)
    else:
        ips_e, dr_e = _normal(float(np.mean(ips)), ips), _normal(float(np.mean(dr)), dr)
        snips_e = _normal(v_snips, w * (y - v_snips) / float(np.mean(w)))
    return MetricEstimate(metric, n, n_eff, float(np.mean(y)), ips=ips_e, snips=snips_e, dr=dr_e)


def _cross_fit(units: Sequence[Unit], y: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: ``sum_a pi(a) q(a)`` and ``q(a_i)``, with ``q`` the per-route means of
    the *other* folds (a route absent there: those folds' overall mean; no other data: 0)."""
    fold = np.arange(len(units)) % folds
    routes = [u.route for u in units]
    model_term, q_logged = np.zeros(len(units)), np.zeros(len(units))
    for f in range(folds):
        train = fold != f
        sums: dict[str, list[float]] = {}
        for r, v in zip((r for r, t in zip(routes, train, strict=True) if t), y[train], strict=True):
            acc = sums.setdefault(r, [0.0, 0.0])
            acc[0] += v
            acc[1] += 1
        default = float(np.mean(y[train])) if train.any() else 0.0
        q = {r: s / c for r, (s, c) in sums.items()}
        for i in np.flatnonzero(fold == f).tolist():
            u = units[i]
            model_term[i] = sum(p * q.get(r, default) for r, p in u.target.items())
            q_logged[i] = q.get(u.route, default)
    return model_term, q_logged


def _normal(value: float, influence: np.ndarray) -> Estimate:
    n = len(influence)
    se = float(np.std(influence, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(value, value - Z95 * se, value + Z95 * se, se)


def _resamples(n: int, rng: np.random.Generator, b: int) -> list[np.ndarray]:
    """``b`` bootstrap index draws, in chunks that keep memory near 1e6 indices."""
    chunk = max(1, min(b, 1_000_000 // max(n, 1)))
    return [rng.integers(0, n, size=(min(chunk, b - s), n)) for s in range(0, b, chunk)]


def _percentile(value: float, draws: np.ndarray) -> Estimate:
    low, high = np.quantile(draws, [0.025, 0.975])
    return Estimate(value, float(low), float(high), float(np.std(draws, ddof=1)))


def _boot_mean(terms: np.ndarray, rng: np.random.Generator, b: int) -> Estimate:
    draws = np.concatenate([terms[idx].mean(axis=1) for idx in _resamples(len(terms), rng, b)])
    return _percentile(float(np.mean(terms)), draws)


def _boot_ratio(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, b: int) -> Estimate:
    draws = np.concatenate([num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300)
                            for idx in _resamples(len(num), rng, b)])
    return _percentile(float(np.sum(num) / np.sum(den)), draws)
