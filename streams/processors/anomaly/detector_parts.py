"""Building blocks of the streaming anomaly detector: small, causal, snapshot-able.

Every class here looks only at observations it has already been given, has no clock
and no randomness, and round-trips through ``to_state()`` / ``from_state()`` to an
object that behaves bit-identically: floats are stored as they are (JSON keeps a
Python float exactly) and derived structures are rebuilt from them deterministically.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right, insort
from collections import deque
from functools import lru_cache

from scipy.special import log_ndtr
from scipy.stats import binom

_LN10 = math.log(10.0)
_LN2 = math.log(2.0)
#: Count-based surprises (tail probabilities floored at 1e-300) never exceed this.
MAX_SURPRISE = 300.0


def gaussian_surprise(z: float) -> float:
    """-log10 of the two-sided normal tail P(|Z| >= |z|): 0 at z = 0, ~z^2/4.6 far out.

    Not capped: how far beyond anything seen a value lies is what ranks the onsets
    of a heavy-tailed series. A NaN z gives 0; an infinite or astronomically large one gives 1e300.
    """
    if z != z:
        return 0.0
    if math.isinf(z):
        return 1e300
    # log_ndtr is -inf beyond |z| ~ 1e154; the state must stay finite (JSON snapshots)
    return min(-(float(log_ndtr(-abs(z))) + _LN2) / _LN10, 1e300)


def poisson_surprise(count: int, lam: float) -> float:
    """-log10 P(N >= count) for N ~ Poisson(lam); 0 when count <= 0, capped."""
    if count <= 0:
        return 0.0
    term = math.exp(-lam)
    cdf = 0.0
    for k in range(count):
        cdf += term
        term *= lam / (k + 1)
    return min(-math.log10(max(1.0 - cdf, 1e-300)), MAX_SURPRISE)


@lru_cache(maxsize=32)
def binomial_surprise_table(n: int, p: float) -> tuple[float, ...]:
    """t[c] = -log10 P(N >= c) for N ~ Binomial(n, p), c = 0..n (t[0] = 0)."""
    sf = binom.sf([c - 1 for c in range(n + 1)], n, p)
    return tuple(min(-math.log10(max(float(v), 1e-300)), MAX_SURPRISE) for v in sf)


class SortedWindow:
    """The last ``size`` values in arrival order and sorted: O(log n) rank, O(1)
    quantiles, 16 bytes per value.

    ``quantile`` on an empty window raises ``IndexError``; ranks of an empty window
    are 0.0.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.fifo: deque[float] = deque()
        self.sorted = array("d")

    def __len__(self) -> int:
        return len(self.sorted)

    def push(self, x: float) -> float | None:
        """Add x; the oldest value leaves once the window is full and is returned."""
        self.fifo.append(x)
        insort(self.sorted, x)
        if len(self.fifo) > self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect_left(self.sorted, old)]
            return old
        return None

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile q in [0, 1] of the values in the window."""
        s = self.sorted
        pos = q * (len(s) - 1)
        i = int(pos)
        if i >= len(s) - 1:
            return s[-1]
        return s[i] + (s[i + 1] - s[i]) * (pos - i)

    def frac_ge(self, x: float) -> float:
        """Fraction of the window's values >= x (0.0 when empty)."""
        n = len(self.sorted)
        return (n - bisect_left(self.sorted, x)) / n if n else 0.0

    def frac_le(self, x: float) -> float:
        """Fraction of the window's values <= x (0.0 when empty)."""
        n = len(self.sorted)
        return bisect_right(self.sorted, x) / n if n else 0.0

    def to_state(self) -> dict:
        return {"size": self.size, "values": list(self.fifo)}

    @classmethod
    def from_state(cls, state: dict) -> SortedWindow:
        w = cls(int(state["size"]))
        w.fifo = deque(float(v) for v in state["values"])
        w.sorted = array("d", sorted(w.fifo))
        return w


class RobustZ:
    """Robust z-score of a value against the last ``size`` values of its series.

    The centre is the median; the scale is the interquartile range over 1.349 (a
    normal's sigma), but never below ``std_floor`` standard deviations of the window
    nor below ``rel_floor`` (times ``max(1, |median|)`` when ``relative``).
    Zero-inflated series (mostly 0 with bursts, like error counts) have an IQR of 0;
    the standard deviation keeps their scale finite and, unlike a quantile, moving
    smoothly as bursts come and go, so identical bursts keep identical z-scores.
    ``z`` is 0.0 until ``min_count`` values have been seen.
    """

    def __init__(self, size: int, min_count: int = 10, rel_floor: float = 1e-9,
                 relative: bool = False, std_floor: float = 0.25, wide_floor: float = 0.0):
        self.window = SortedWindow(size)
        self.min_count = min_count
        self.rel_floor = rel_floor
        self.relative = relative
        self.std_floor = std_floor
        self.wide_floor = wide_floor
        self.center = 0.0
        self.scale = 0.0
        self.degenerate = False     # the last scale came from a floor (IQR of 0)
        # Running sums of (x - shift) and its square for the standard deviation,
        # recomputed exactly from the window every `size` pushes so rounding error
        # cannot build up (after a 1e12 spike has left, say).
        self.shift: float | None = None
        self.s1 = self.s2 = 0.0
        self.since_exact = 0

    def ready(self) -> bool:
        return len(self.window) >= self.min_count

    def std(self) -> float:
        n = len(self.window)
        if not n:
            return 0.0
        m = self.s1 / n
        return math.sqrt(max(self.s2 / n - m * m, 0.0))

    def z(self, x: float) -> float:
        """z of x against the window (x is not added); sets ``center``/``scale``."""
        w = self.window
        if len(w) < self.min_count:
            return 0.0
        med = w.quantile(0.5)
        floor = self.rel_floor * max(1.0, abs(med)) if self.relative else self.rel_floor
        iqr = (w.quantile(0.75) - w.quantile(0.25)) / 1.349
        self.degenerate = iqr <= 0.0
        scale = max(iqr, self.std_floor * self.std(), floor)
        if self.wide_floor:
            scale = max(scale, self.wide_floor * (w.quantile(0.98) - w.quantile(0.02)) / 4.1)
        self.center, self.scale = med, scale
        return (x - med) / scale

    def surprise(self, x: float, z: float) -> float:
        """Gaussian surprise of z; when the window's IQR is 0 (the scale is a floor,
        not a measured spread) capped by how rare x is in the window itself.

        The cap is -log10 of the share of window values at least as extreme as x
        (with one pseudo-count), plus the Gaussian surprise of how far x lies beyond
        the window's extreme in scale units (in orders of magnitude when the window
        holds one repeated value). So a spike as large as the ones that
        make up 1% of a spiky series scores 2, not the astronomical figure its
        floored scale would give, while a value far beyond anything seen keeps its
        full weight. Call after ``z(x)``; 0.0 before the window is ready.
        """
        w = self.window
        n = len(w)
        if n < self.min_count:
            return 0.0
        g = gaussian_surprise(z)
        if not self.degenerate:
            return g
        s = w.sorted
        if x >= self.center:
            c = n - bisect_left(s, x)
            beyond = (x - s[-1]) / self.scale if c == 0 else 0.0
        else:
            c = bisect_right(s, x)
            beyond = (s[0] - x) / self.scale if c == 0 else 0.0
        if s[0] != s[-1]:
            far = gaussian_surprise(beyond)
        else:
            # A window of identical values has no spread at all: distance beyond it
            # counts in orders of magnitude, so the first non-zero value of an
            # all-zero series is news, but not the 1e20 that would blind the onset
            # gate for weeks.
            far = math.log10(1.0 + beyond)
        return min(g, -math.log10((c + 1) / (n + 1)) + far)

    def push(self, x: float) -> None:
        if self.shift is None:
            self.shift = x
        old = self.window.push(x)
        self.since_exact += 1
        if self.since_exact >= self.window.size:
            self._exact_sums()
            return
        y = x - self.shift
        self.s1 += y
        self.s2 += y * y
        if old is not None:
            y = old - self.shift
            self.s1 -= y
            self.s2 -= y * y

    def _exact_sums(self) -> None:
        sh = self.shift or 0.0
        self.s1 = math.fsum(v - sh for v in self.window.fifo)
        self.s2 = math.fsum((v - sh) * (v - sh) for v in self.window.fifo)
        self.since_exact = 0

    def to_state(self) -> dict:
        return {"window": self.window.to_state(), "center": self.center,
                "scale": self.scale, "degenerate": self.degenerate, "shift": self.shift, "s1": self.s1, "s2": self.s2,
                "since_exact": self.since_exact}

    def load(self, state: dict) -> RobustZ:
        self.window = SortedWindow.from_state(state["window"])
        self.center, self.scale = float(state["center"]), float(state["scale"])
        self.degenerate = bool(state["degenerate"])
        self.shift = None if state["shift"] is None else float(state["shift"])
        self.s1, self.s2 = float(state["s1"]), float(state["s2"])
        self.since_exact = int(state["since_exact"])
        return self


class DailyProfile:
    """What a series usually is at this time of day: the median of its last ``depth``
    values in the same time-of-day bin.

    The bin width is the series' sampling interval, learned once from the median of
    its first 20 time steps; series sampled coarser than 4 or finer than
    ``max_bins`` per day get no profile (``reference`` is always None).
    """

    LEARN_STEPS = 20

    def __init__(self, depth: int = 3, max_bins: int = 2000):
        self.depth = depth
        self.max_bins = max_bins
        self.deltas: list[float] = []
        self.last_t: float | None = None
        self.bins = 0               # 0: not learnt yet or no daily profile
        self.learnt = False
        self.profile: dict[int, deque[float]] = {}

    def _bin(self, t: float) -> int:
        return int((t % 86400.0) / 86400.0 * self.bins) % self.bins

    def observe_time(self, t: float) -> None:
        """Learn the sampling interval from the first time steps."""
        if not self.learnt and self.last_t is not None:
            self.deltas.append(t - self.last_t)
            if len(self.deltas) >= self.LEARN_STEPS:
                dt = sorted(self.deltas)[len(self.deltas) // 2]
                bins = int(round(86400.0 / dt)) if dt > 0 else 0
                self.bins = bins if 4 <= bins <= self.max_bins else 0
                self.learnt = True
                self.deltas = []
        self.last_t = t

    def reference(self, t: float) -> float | None:
        """Median of the recent values in t's bin, or None when there are none."""
        if not self.bins:
            return None
        h = self.profile.get(self._bin(t))
        if not h:
            return None
        s = sorted(h)
        return s[len(s) // 2]

    def band(self, t: float) -> tuple[float, float]:
        """(lowest, highest) reference among t's bin and its two neighbours that have
        values; (nan, nan) when none has. Call when ``reference(t)`` is not None."""
        refs = []
        b = self._bin(t)
        for k in (b - 1, b, b + 1):
            h = self.profile.get(k % self.bins)
            if h:
                s = sorted(h)
                refs.append(s[len(s) // 2])
        return (min(refs), max(refs)) if refs else (math.nan, math.nan)

    def push(self, t: float, x: float) -> None:
        if self.bins:
            b = self._bin(t)
            h = self.profile.get(b)
            if h is None:
                h = self.profile[b] = deque(maxlen=self.depth)
            h.append(x)

    def to_state(self) -> dict:
        return {"depth": self.depth, "max_bins": self.max_bins, "deltas": self.deltas,
                "last_t": self.last_t, "bins": self.bins, "learnt": self.learnt,
                "profile": [[b, list(h)] for b, h in sorted(self.profile.items())]}

    @classmethod
    def from_state(cls, state: dict) -> DailyProfile:
        p = cls(int(state["depth"]), int(state["max_bins"]))
        p.deltas = [float(v) for v in state["deltas"]]
        p.last_t = None if state["last_t"] is None else float(state["last_t"])
        p.bins, p.learnt = int(state["bins"]), bool(state["learnt"])
        p.profile = {int(b): deque((float(v) for v in vals), maxlen=p.depth)
                     for b, vals in state["profile"]}
        return p
