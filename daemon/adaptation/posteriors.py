"""Per-route posteriors with exponential forgetting in event time (pure, plain data).

Each route keeps decayed sums of its outcomes: successes (a Beta posterior of the
success rate), feedback scores in [0, 1] (a Beta posterior of quality, fractional
updates), log latencies (a log-normal model: mean and spread of log ms) and cost per
call.  Everything decays with half-life ``half_life_s`` of event time, so a route that
recovers (or degrades) is seen as it is now, not as it was an hour ago.  The decay is
applied lazily at each update, in event order: the same events give the same floats
whatever the batching.

Forgetting alone is slow to notice that a route came back: a route sent only its
exploration share carries its bad minute for several half-lives.  Two change points
cut that short (the "restart on detected change" of non-stationary bandits):

- latency: the last ``RECENT`` log latencies are kept raw; when the mean of the last
  2..RECENT of them leaves the mean of the posterior without them by more than
  ``SHIFT_Z`` standard errors, the latency model restarts from those recent samples
  (``outcome`` returns True so the caller may act);
- failures: when the route's circuit breaker closes after successful probes following
  an outage (it opened on failures in a row), the caller calls ``forget_failures`` (the
  failure regime ended).

A restart upwards keeps the model it replaced as the route's latency *baseline*
(``baseline``): how fast the route was before it slowed down, so the bandit can tell "3x
slower than itself" without any SLO being configured.  The baseline goes when a restart
downwards brings the route back within 1.5x of it, or ``BASELINE_S`` after it was taken
(a slowness that lasts that long is the route's new normal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

US = 1_000_000
#: Raw recent log latencies kept for the latency change test.
RECENT = 5
#: Standard errors between a recent mean and the posterior mean that mean "changed"
#: (tested for the last 2..RECENT samples, hence higher than a single test would need).
SHIFT_Z = 4.5
#: Floor of the spread used by the change test (log ms): 10% jitter is not a change.
MIN_SD = 0.1
#: Event-time seconds a latency baseline is kept after the slowdown that set it.
BASELINE_S = 600.0
#: A restart downwards within this factor of the baseline ends the slowdown.
BACK_FACTOR = 1.5


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
    #: The last ``RECENT`` log latencies, oldest first, each as ``[x, w]``: the value and
    #: the weight it still has in the decayed sums (so the change test can take it out).
    recent: list[list[float]] = field(default_factory=list)
    #: Times the latency model restarted on a change.
    lat_changes: int = 0
    #: Latency samples (raw count, not decayed) since the latency model last (re)started.
    lat_raw: int = 0
    #: The latency model before the route slowed down: mean and sd of log ms, and when it
    #: was taken (µs); None while the route is not slower than it was.
    base_mu: float | None = None
    base_sd: float = 0.0
    base_t_us: int = 0

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
            for r in self.recent:
                r[1] *= f
        self.t_us = t_us

    def outcome(self, ok: bool, duration_ms: float | None, cost_usd: float | None,
                tokens_in: float | None, tokens_out: float | None) -> bool:
        """Count one call's outcome (missing / non-finite numbers are skipped).

        Latency is learned from successful calls only: a failure's duration (a reset
        after 2 ms, a timeout after 6 s) says how it failed, and failures are already
        counted by the success rate.

        Returns:
            True when this outcome made the latency model restart (see the module
            docstring), else False.
        """
        self.n += 1.0
        self.ok += 1.0 if ok else 0.0
        self.total += 1
        changed = False
        if ok and duration_ms is not None and math.isfinite(duration_ms) and duration_ms >= 0:
            x = math.log(max(duration_ms, 0.01))
            shifted = self._latency_shift(x)
            changed = bool(shifted)
            if shifted:
                self._rebase(sum(shifted) / len(shifted))
                self.lat_n = float(len(shifted))
                self.lat_s = sum(shifted)
                self.lat_ss = sum(v * v for v in shifted)
                self.recent = [[v, 1.0] for v in shifted]
                self.lat_changes += 1
                self.lat_raw = len(shifted)
            else:
                self.lat_n += 1.0
                self.lat_raw += 1
                self.lat_s += x
                self.lat_ss += x * x
        if cost_usd is not None and math.isfinite(cost_usd) and cost_usd >= 0:
            self.cost_n += 1.0
            self.cost_sum += cost_usd
        if tokens_in is not None and tokens_out is not None and math.isfinite(tokens_in) and math.isfinite(tokens_out):
            self.tok_n += 1.0
            self.tok_in += tokens_in
            self.tok_out += tokens_out
        return changed

    def _latency_shift(self, x: float) -> list[float]:
        """Test whether the last ``RECENT`` log latencies, ``x`` included, left the model.

        The ring is compared with the posterior *without the ring's own decayed
        contributions*: at a low rate (a route held at the exploration floor) the ring
        is most of the posterior's weight, and testing it against itself hides the
        change.  The test runs only with a full ring and at least ``RECENT`` raw samples
        before it since the model last started (raw counts: the decayed weight of a
        floor-rate route stays small for as long as it is sent little traffic, and it is
        exactly that route whose recovery must be seen); the standard error includes the
        old mean's own uncertainty.

        Returns:
            On a change, the ring's samples beyond two standard deviations of the old
            mean on the side it moved to (the new regime: a ring straddling the change
            would restart the model on a mixture), at least ``x``; else [].
        """
        self.recent.append([x, 1.0])
        del self.recent[:-RECENT]
        if len(self.recent) < RECENT or self.lat_raw + 1 < 2 * RECENT:
            return []
        n = self.lat_n + 1.0 - sum(w for _, w in self.recent)  # x is not in the sums yet
        if n < 1.0:
            return []
        s = self.lat_s + x - sum(w * v for v, w in self.recent)
        ss = self.lat_ss + x * x - sum(w * v * v for v, w in self.recent)
        mu = s / n
        sd = max(math.sqrt(max(ss / n - mu * mu, 0.0)), MIN_SD)
        # Scan the last m = 2..RECENT samples: a large change shows in two samples, a
        # smaller one needs the whole ring (and a route at the exploration floor sends
        # a sample every few seconds, so waiting for five costs its recovery seconds).
        for m in range(2, RECENT + 1):
            shift = sum(v for v, _ in self.recent[-m:]) / m - mu
            if abs(shift) > SHIFT_Z * sd * math.sqrt(1.0 / m + 1.0 / n):
                side = 1.0 if shift > 0 else -1.0
                return [v for v, _ in self.recent if (v - mu) * side > 2 * sd] or [x]
        return []

    def _rebase(self, new_mu: float) -> None:
        """Keep or drop the baseline as the latency model restarts at mean ``new_mu``."""
        old = self.log_latency()
        if old is None:
            return
        if new_mu > old[0]:
            if self.base_mu is None:  # the first step up: the healthy model is the baseline
                self.base_mu, self.base_sd, self.base_t_us = old[0], old[1], self.t_us
        elif self.base_mu is not None and new_mu <= self.base_mu + math.log(BACK_FACTOR):
            self.base_mu = None

    def baseline(self) -> tuple[float, float] | None:
        """Mean and sd of log latency (ms) before the route slowed down, while it is
        slower than that and the baseline is younger than ``BASELINE_S``; else None."""
        if self.base_mu is None or self.t_us - self.base_t_us > BASELINE_S * US:
            return None
        return self.base_mu, self.base_sd

    def restart_success(self, ok: float, n: float) -> None:
        """Restart the success posterior from ``ok`` successes of ``n`` recent outcomes
        (a change point in the success rate: a brownout seen by the circuit breaker)."""
        self.n, self.ok = max(n, 0.0), min(max(ok, 0.0), max(n, 0.0))

    def forget_failures(self) -> None:
        """Drop the (decayed) failures from the success posterior, keeping its successes:
        called when a circuit breaker closes, i.e. the failure regime is over."""
        self.n = self.ok

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
