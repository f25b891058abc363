"""Per-route posteriors with exponential forgetting in event time (pure, plain data).

Each route keeps decayed sums of its outcomes: successes (a Beta posterior of the
success rate), feedback scores in [0, 1] (a Beta posterior of quality, fractional
updates), log latencies (a log-normal model: mean and spread of log ms) and cost per
call.  Everything decays with half-life ``half_life_s`` of event time, so a route that
recovers (or degrades) is seen as it is now, not as it was an hour ago.  The decay is
applied lazily at each update, in event order: the same events give the same floats
whatever the batching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

US = 1_000_000


@dataclass(slots=True)
class RouteStats:
    """Decayed sufficient statistics of one route (plain data: pickled in snapshots)."""

    t_us: int = 0
    n: float = 0.0
    ok: float = 0.0
    q_n: float = 0.0
    q_sum: float = 0.0
    lat_n: float = 0.0
    lat_s: float = 0.0
    lat_ss: float = 0.0
    cost_n: float = 0.0
    cost_sum: float = 0.0
    tok_n: float = 0.0
    tok_in: float = 0.0
    tok_out: float = 0.0
    #: Outcomes ever seen (not decayed): what ``min_samples`` counts.
    total: int = 0

    def decay_to(self, t_us: int, half_life_s: float) -> None:
        """Forget down to time ``t_us`` (never backwards; no-op for t <= the last time)."""
        if t_us <= self.t_us:
            return
        if self.t_us and half_life_s > 0:
            f = 0.5 ** ((t_us - self.t_us) / (half_life_s * US))
            self.n *= f
            self.ok *= f
            self.q_n *= f
            self.q_sum *= f
            self.lat_n *= f
            self.lat_s *= f
            self.lat_ss *= f
            self.cost_n *= f
            self.cost_sum *= f
            self.tok_n *= f
            self.tok_in *= f
            self.tok_out *= f
        self.t_us = t_us

    def outcome(self, ok: bool, duration_ms: float | None, cost_usd: float | None,
                tokens_in: float | None, tokens_out: float | None) -> None:
        """Count one call's outcome (missing / non-finite numbers are skipped)."""
        self.n += 1.0
        self.ok += 1.0 if ok else 0.0
        self.total += 1
        if duration_ms is not None and math.isfinite(duration_ms) and duration_ms >= 0:
            x = math.log(max(duration_ms, 0.01))
            self.lat_n += 1.0
            self.lat_s += x
            self.lat_ss += x * x
        if cost_usd is not None and math.isfinite(cost_usd) and cost_usd >= 0:
            self.cost_n += 1.0
            self.cost_sum += cost_usd
        if tokens_in is not None and tokens_out is not None and math.isfinite(tokens_in) and math.isfinite(tokens_out):
            self.tok_n += 1.0
            self.tok_in += tokens_in
            self.tok_out += tokens_out

    def quality(self, score: float) -> None:
        """Count one feedback score (clipped to [0, 1]; non-finite scores are skipped)."""
        if math.isfinite(score):
            s = min(max(score, 0.0), 1.0)
            self.q_n += 1.0
            self.q_sum += s

    # ------------------------------------------------------------------ views

    def success_mean(self) -> float:
        """Posterior mean of the success rate under a Beta(1, 1) prior."""
        return (1.0 + self.ok) / (2.0 + self.n)

    def quality_mean(self) -> float | None:
        """Posterior mean quality (Beta(1, 1) prior), None before any score."""
        return None if self.q_n <= 0 else (1.0 + self.q_sum) / (2.0 + self.q_n)

    def log_latency(self) -> tuple[float, float] | None:
        """Mean and standard deviation of log latency (ms); None before any latency."""
        if self.lat_n <= 0:
            return None
        mu = self.lat_s / self.lat_n
        var = max(self.lat_ss / self.lat_n - mu * mu, 0.0) if self.lat_n >= 2 else 0.25
        return mu, math.sqrt(var)

    def p95_ms(self) -> float | None:
        """The log-normal estimate of the 95th percentile latency (ms), None without data."""
        ll = self.log_latency()
        return None if ll is None else math.exp(ll[0] + 1.645 * ll[1])

    def cost_per_call(self, cost_per_1k_in: float | None, cost_per_1k_out: float | None) -> float | None:
        """Mean reported cost per call; else estimated from mean tokens and the route's
        prices; None when neither is known."""
        if self.cost_n > 0:
            return self.cost_sum / self.cost_n
        if self.tok_n > 0 and (cost_per_1k_in is not None or cost_per_1k_out is not None):
            return ((self.tok_in / self.tok_n) * (cost_per_1k_in or 0.0)
                    + (self.tok_out / self.tok_n) * (cost_per_1k_out or 0.0)) / 1000.0
        return None
