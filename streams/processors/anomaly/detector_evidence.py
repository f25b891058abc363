"""Evidence over time for the streaming anomaly detector: bursts, tail runs and the
onset gate that turns surprises into scores.

Like ``detector_parts``, everything here is causal, clock-free, randomness-free and
round-trips through ``to_state()`` / ``from_state()`` bit-identically.
"""

from __future__ import annotations

import math
from collections import deque

from adaptd.streams.processors.anomaly.detector_parts import (
    SortedWindow,
    binomial_surprise_table,
    poisson_surprise,
)


class BurstRate:
    """Surprise at how many of the last ``window`` flags are set, given the rate of
    set flags over the ``history`` flags before them (Poisson tail, -log10).

    Catches a rise in the density of extreme points (bursts of spikes) that no single
    point shows. 0.0 until ``min_history`` older flags exist.
    """

    def __init__(self, window: int = 50, history: int = 2000, min_history: int = 200):
        self.window, self.history, self.min_history = window, history, min_history
        self.flags: deque[int] = deque()
        self.recent = 0             # set flags among the last `window`
        self.older = 0              # set flags among the `history` before them

    def update(self, flag: bool) -> float:
        f = self.flags
        f.append(1 if flag else 0)
        self.recent += f[-1]
        n = len(f)
        if n > self.window:         # the flag leaving `recent` joins `older`
            moved = f[n - 1 - self.window]
            self.recent -= moved
            self.older += moved
        if n > self.window + self.history:
            self.older -= f.popleft()
        n_old = len(f) - min(len(f), self.window)
        if n_old < self.min_history:
            return 0.0
        rate = (self.older + 1) / (n_old + 2)
        return poisson_surprise(self.recent, rate * self.window)

    def to_state(self) -> dict:
        return {"window": self.window, "history": self.history,
                "min_history": self.min_history, "flags": list(self.flags)}

    @classmethod
    def from_state(cls, state: dict) -> BurstRate:
        b = cls(int(state["window"]), int(state["history"]), int(state["min_history"]))
        b.flags = deque(int(v) for v in state["flags"])
        n_recent = min(len(b.flags), b.window)
        flags = list(b.flags)
        b.recent = sum(flags[len(flags) - n_recent:])
        b.older = sum(flags[:len(flags) - n_recent])
        return b


class TailRun:
    """Surprise at a run of values in the same tail: how many of the last ``window``
    z-scores lie in the top (or bottom) ``q`` of the last ``history`` ones.

    Quantile flags make the expected rate q whatever the series' distribution, so a
    sustained shift that no single point shows (a plateau, a slow drift up) is
    measured on the same scale in every series. The binomial tail (-log10) of the run
    is what it would mean for independent values; a series that wanders (a random
    walk, a smooth cycle) makes long runs all the time, so the surprise is also
    calibrated on the series' own past runs: it is at most the empirical rarity of a
    run this long among the ``history`` runs before the last ``window`` (so a growing
    run is not compared with itself), plus the binomial surprise of the part of the
    run beyond the longest of them. 0.0 until ``min_history + window``
    z-scores have been seen.
    """

    def __init__(self, window: int = 24, q: float = 0.1, history: int = 1000,
                 min_history: int = 100):
        self.window, self.q, self.min_history = window, q, min_history
        self.past = SortedWindow(history)
        self.hi: deque[int] = deque()
        self.lo: deque[int] = deque()
        self.n_hi = self.n_lo = 0
        self.pending: deque[int] = deque()      # the last `window` run lengths
        self.runs: deque[int] = deque()         # older run lengths, at most `history`
        self.hist = [0] * (window + 1)          # their histogram

    def update(self, z: float) -> float:
        past = self.past
        ready = len(past) >= self.min_history
        h = 1 if ready and past.frac_ge(z) <= self.q else 0
        lo = 1 if ready and past.frac_le(z) <= self.q else 0
        if len(self.hi) == self.window:
            self.n_hi -= self.hi.popleft()
            self.n_lo -= self.lo.popleft()
        self.hi.append(h)
        self.lo.append(lo)
        self.n_hi += h
        self.n_lo += lo
        out = 0.0
        if len(past) >= self.min_history + self.window:
            table = binomial_surprise_table(self.window, self.q)
            c = max(self.n_hi, self.n_lo)
            out = self._calibrated(c, table)
            # A run joins the history only once its window no longer overlaps the
            # current one: a growing run must not be compared with its own start.
            self.pending.append(c)
            if len(self.pending) > self.window:
                old = self.pending.popleft()
                self.runs.append(old)
                self.hist[old] += 1
                if len(self.runs) > past.size:
                    self.hist[self.runs.popleft()] -= 1
        past.push(z)
        return out

    def _calibrated(self, c: int, table: tuple[float, ...]) -> float:
        """min(binomial surprise, empirical rarity among past runs + the binomial
        surprise of the excess over the longest past run); binomial alone without
        past runs."""
        n = len(self.runs)
        if not n:
            return table[c]
        hist = self.hist
        longest = max(k for k in range(len(hist)) if hist[k])
        at_least = sum(hist[c:])
        empirical = -math.log10((at_least + 1) / (n + 1))
        beyond = table[c] - table[longest] if c > longest else 0.0
        return min(table[c], empirical + beyond)

    def to_state(self) -> dict:
        return {"window": self.window, "q": self.q, "min_history": self.min_history,
                "past": self.past.to_state(), "hi": list(self.hi), "lo": list(self.lo),
                "pending": list(self.pending), "runs": list(self.runs)}

    @classmethod
    def from_state(cls, state: dict) -> TailRun:
        past = SortedWindow.from_state(state["past"])
        t = cls(int(state["window"]), float(state["q"]), past.size,
                int(state["min_history"]))
        t.past = past
        t.hi = deque(int(v) for v in state["hi"])
        t.lo = deque(int(v) for v in state["lo"])
        t.n_hi, t.n_lo = sum(t.hi), sum(t.lo)
        t.pending = deque(int(v) for v in state["pending"])
        t.runs = deque(int(v) for v in state["runs"])
        for c in t.runs:
            t.hist[c] += 1
        return t


class OnsetGate:
    """Turns streams of surprises (one per channel) into one onset score: only what
    exceeds everything recent in its own channel counts, and an alert silences the
    next ``hold`` points.

    Each channel's reference is the running maximum of its past surprises, decaying
    by its ``decays`` factor per observation, so a series' usual peaks (heavy tails,
    daily bursts) stop alarming once seen and a new regime is reported once, at its
    onset, rather than for as long as it lasts. Channels keep separate references
    because their scales differ: a heavy-tailed series' point surprises run into the
    thousands and would hide any burst-density evidence if the two shared one
    maximum. The output is the largest channel excess; one >= ``alert_level`` opens
    the hold (in NAB, as in an alert channel, only the first detection of an
    incident counts and repeats are noise).
    """

    def __init__(self, decays: tuple[float, ...] | list[float] = (0.9995,),
                 alert_level: float = 1.0, hold: int = 20, ratio_weight: float = 0.0):
        self.decays = [float(d) for d in decays]
        self.alert_level, self.hold = alert_level, hold
        self.ratio_weight = ratio_weight
        self.refs = [0.0] * len(self.decays)
        self.left = 0               # points still silenced

    def update(self, surprises: list[float]) -> float:
        """Score one observation from its per-channel surprises (same order as
        ``decays``); returns the gated excess, >= 0."""
        s = 0.0
        refs, decays = self.refs, self.decays
        rw = self.ratio_weight
        for k, u in enumerate(surprises):
            r = refs[k]
            if u > r:
                ex = u - r
                if rw:
                    ex = min(ex, rw * math.log((u + 1.0) / (r + 1.0)))
                if ex > s:
                    s = ex
            refs[k] = max(r * decays[k], u)
        if self.left > 0:
            self.left -= 1
            s = 0.0
        elif s >= self.alert_level:
            self.left = self.hold
        return s

    def to_state(self) -> dict:
        return {"decays": self.decays, "alert_level": self.alert_level,
                "hold": self.hold, "ratio_weight": self.ratio_weight, "refs": self.refs,
                "left": self.left}

    @classmethod
    def from_state(cls, state: dict) -> OnsetGate:
        g = cls(state["decays"], float(state["alert_level"]), int(state["hold"]),
                float(state["ratio_weight"]))
        g.refs = [float(r) for r in state["refs"]]
        g.left = int(state["left"])
        return g
