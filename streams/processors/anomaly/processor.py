"""The anomaly processor over performance windows: one streaming detector per series.

A derived processor reading the history processor's closed ``window`` events (10 s and
1 min by default).  Per key ``(tenant, program, module, route, model)``, window size and
metric it keeps a ``adaptd.streams.processors.anomaly.detectors.Detector`` and feeds it the window's
value at the window's end time:

- ``p95_ms``, ``p99_ms``: latency percentiles; alert when they rise (windows with at
  least ``min_events`` latencies);
- ``throughput``: executions + LM calls per second; alerts both ways (any window);
- ``cost_per_call``: cost / count, alerts when it rises; ``tokens_per_call``: (tokens in +
  out) / count, both ways (windows with ``min_events``, keys that report them);
- ``quality_mean``: mean feedback score, alerts when it falls (``min_quality`` scores).

The error rate is the fast path's (``error_burst``, on raw events, within seconds), so it
is not repeated here: one key + metric has one owner, and incidents never double.

An incident opens on a window whose value is outside the detector's expected range in the
alerting direction *and* differs from the detector's centre by a real effect
(``min_ratio`` and ``min_abs``), once the series is past ``warmup``, when either the
detector scores it ``>= alert_score`` (its onset gate: news, not a known peak) or the
effect has held ``sustain`` windows in a row (a gradual onset the gate let through).
Window sizes are deduplicated: an incident belongs to ``key + metric`` and only the size
that opened it judges it; the other sizes' anomalies are folded in.  It resolves after
``resolve_windows`` windows of that size without the effect against the baseline frozen
at the opening, or with reason ``no data`` once ``silence_windows`` of them passed
without a judgeable value (judged on the order of window ends, never on a clock).
Severity is ``critical`` from an effect of ``critical_ratio`` (quality: a drop of
``critical_quality_drop``); an ``update`` signal tells a rise in severity, at most every
``update_every`` windows.

**Bounded keys.**  A tenant holds the series of at most ``max_keys_per_tenant`` keys.  A
window of a key new to a tenant at its cap evicts (with all its series) the tenant's key
whose last window ended earliest (ties by key) if that was ``key_idle_s`` or more before
this window's end and it has no open incident; otherwise the window is refused
(``keys_refused``).  Window ends are the clock, so this too is the same under any batching.

The detector is causal and deterministic and windows arrive in a fixed order, so replay
and any batching give the same signals.  scikit-learn is not used (yet): a per-series
detector with effect-size gates can say which metric moved and by how much (expected
range vs observed); an IsolationForest over multivariate window features would need a
training span and refits per key and says neither, so it was left out until a case
shows what it adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptd.streams.processors.anomaly.detectors import STATE_VERSION, Detector, DetectorConfig
from adaptd.streams.processors.base import to_us
from adaptd.streams.processors.incidents import Incident, finite, incident_id, key_text, more_severe, signal_event
from adaptd.streams.processors.keys import GONE, Key, KeyBudget
from adaptd.streams.processors.windows import US, parse_size

#: Detector settings for window series: a shorter memory than the NAB default (240
#: windows: 40 min of 10 s windows, 4 h of 1 min ones) keeps a key's dozen detectors at
#: about 40 KB each in memory (15 KB pickled) instead of about 100 KB.
WINDOW_DETECTOR = DetectorConfig(history=240, run_history=240, burst_history=240)


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is read from a window and what counts as an anomaly of it."""

    name: str
    #: "up", "down" or "both": the directions that alert.
    direction: str
    #: observed / baseline (rises) or baseline / observed (falls) must reach this ...
    min_ratio: float
    #: ... and |observed - baseline| this.
    min_abs: float


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("p95_ms", "up", 1.5, 5.0),
    MetricSpec("p99_ms", "up", 1.5, 10.0),
    MetricSpec("throughput", "both", 2.0, 0.5),
    MetricSpec("cost_per_call", "up", 1.5, 0.0),
    MetricSpec("tokens_per_call", "both", 1.5, 5.0),
    MetricSpec("quality_mean", "down", 1.0, 0.1),
)}


@dataclass(frozen=True)
class AnomalyConfig:
    """Parameters of the window anomaly processor (global, not per key)."""

    sizes: tuple[str, ...] = ("10s", "1m")
    metrics: tuple[str, ...] = tuple(METRICS)
    alert_score: float = 0.5
    sustain: int = 3
    warmup: int = 30
    min_events: int = 20
    min_quality: int = 10
    resolve_windows: int = 3
    silence_windows: int = 30
    update_every: int = 6
    critical_ratio: float = 3.0
    critical_quality_drop: float = 0.3
    detector: DetectorConfig = WINDOW_DETECTOR
    #: Give detectors event time in seconds, which lets 1 min series learn a daily
    #: profile; off, they get window numbers (no profile).  The profile keeps a deque per
    #: time-of-day bin: about 1.4 MB per 1 min series after a day, too much per key.
    daily_profile: bool = False
    #: Most keys per tenant (each holds up to one detector per size and metric, tens of
    #: KB each), and how long (event time) a key must have had no window to make room.
    max_keys_per_tenant: int = 1_000
    key_idle_s: float = 3600.0

    def __post_init__(self) -> None:
        for size in self.sizes:
            parse_size(size)
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"AnomalyConfig: unknown metrics {sorted(unknown)}; known: {sorted(METRICS)}")
        if min(self.sustain, self.resolve_windows, self.silence_windows, self.update_every,
               self.max_keys_per_tenant) < 1:
            raise ValueError("AnomalyConfig: sustain, resolve_windows, silence_windows, update_every, "
                             "max_keys_per_tenant must be >= 1")


@dataclass(slots=True)
class Series:
    """One (key, size, metric) series: its detector and how long the effect has held."""

    detector: Detector
    n: int = 0
    streak: int = 0


@dataclass(slots=True)
class AnomalyState:
    """The processor's state (pickled in snapshots; detectors pickle as plain objects)."""

    budget: KeyBudget
    series: dict[tuple[Key, str, str], Series] = field(default_factory=dict)
    incidents: dict[tuple[Key, str], Incident] = field(default_factory=dict)
    #: Per key: its code; per code: the key (None: free), its last window end (µs) and
    #: when it was added (``GONE`` once evicted).
    codes: dict[Key, int] = field(default_factory=dict)
    keys: list[Key | None] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    born: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    #: Earliest silence deadline among open incidents (µs; no incident: never).
    next_deadline: int = 2**62
    windows: int = 0
    signals: int = 0


def _per_call(total: str, *more: str) -> Callable[[dict, int], float | None]:
    def read(w: dict, count: int) -> float | None:
        value = float(w.get(total) or 0.0) + sum(float(w.get(m) or 0.0) for m in more)
        return value / count
    return read


class AnomalyProcessor:
    """Anomalies of window series.  A derived processor: see ``adaptd.streams.processors.base``."""

    def __init__(self, config: AnomalyConfig | None = None, *, name: str = "anomaly",
                 upstream: str = "history") -> None:
        self.cfg = c = config or AnomalyConfig()
        self.name, self.upstream, self.source = name, upstream, f"adaptd.{name}"
        self.size_us = {s: parse_size(s) for s in c.sizes}
        self.specs = [METRICS[m] for m in c.metrics]
        cost, tokens = _per_call("cost_usd"), _per_call("tokens_in", "tokens_out")
        self._read: dict[str, Callable[[dict, int], float | None]] = {
            "p95_ms": lambda w, n: w.get("p95_ms") if (w.get("latency_n") or 0) >= c.min_events else None,
            "p99_ms": lambda w, n: w.get("p99_ms") if (w.get("latency_n") or 0) >= c.min_events else None,
            "cost_per_call": cost, "tokens_per_call": tokens,
            "quality_mean": lambda w, n: w.get("quality_mean") if (w.get("quality_n") or 0) >= c.min_quality else None,
        }

    def config(self) -> dict[str, Any]:
        return {"version": 2, "detector_state": STATE_VERSION, **asdict(self.cfg)}

    def initial_state(self) -> AnomalyState:
        return AnomalyState(budget=KeyBudget(self.cfg.max_keys_per_tenant, int(round(self.cfg.key_idle_s * US))))

    def metrics(self, state: AnomalyState) -> dict[str, Any]:
        return {"keys": len(state.codes), **state.budget.metrics(), "series": len(state.series),
                "open_incidents": len(state.incidents), "windows": state.windows, "signals": state.signals}

    # ------------------------------------------------------------------ windows

    def process(self, state: AnomalyState, events: list[dict[str, Any]],
                watermark: int) -> tuple[AnomalyState, list[dict[str, Any]]]:
        """Feed the closed windows ``events`` (in the upstream's order) to the detectors.

        Returns:
            ``(state, signals)``: state updated in place; ``signal`` event dicts in window
            order.  Windows of other sizes or kinds are ignored; no windows, no signals.
            The watermark is not used (window ends are the clock), so batching cannot
            change the outcome.
        """
        out: list[dict[str, Any]] = []
        for w in events:
            size = w.get("window_size")
            if w.get("kind") != "window" or size not in self.size_us:
                continue
            end = to_us(w["window_end"])
            if end > state.next_deadline:
                self._silence(state, end, out)
            state.windows += 1
            key: Key = (w.get("tenant") or "default", w.get("program"), w.get("module"), w.get("route"),
                        w.get("model"))
            if not self._admit(state, key, end):
                continue
            count = int(w.get("count") or 0)
            t = end / US if self.cfg.daily_profile else float(end // self.size_us[size])
            for spec in self.specs:
                x = self._value(spec.name, w, count, key, size, state)
                if x is None or not math.isfinite(x):
                    continue
                sid = (key, size, spec.name)
                series = state.series.get(sid)
                if series is None:
                    series = state.series[sid] = Series(Detector(self.cfg.detector, seed=0))
                score = series.detector.update(t, x)
                series.n += 1
                self._judge(state, key, size, spec, series, x, score, end, w, out)
        state.signals += len(out)
        return state, out

    def _admit(self, state: AnomalyState, key: Key, end: int) -> bool:
        """Note a window of ``key`` ending at ``end``; False when the key is new and its
        tenant has no room for it (see the module docstring)."""
        code = state.codes.get(key)
        if code is not None:
            state.last[code] = max(state.last[code], end)
            return True
        budget, tenant = state.budget, key[0]
        if not budget.room(tenant):
            victim = budget.victim(tenant, end, state.last, state.born,
                                   lambda c: not any((state.keys[c], m.name) in state.incidents for m in self.specs))
            if victim is None:
                budget.refuse(tenant)
                return False
            self._evict(state, victim)
        born = state.windows
        if state.free:
            code = state.free.pop()
            state.keys[code], state.last[code], state.born[code] = key, end, born
        else:
            code = len(state.keys)
            state.keys.append(key)
            state.last.append(end)
            state.born.append(born)
        state.codes[key] = code
        budget.added(tenant, code, key_text(key), end, born)
        return True

    def _evict(self, state: AnomalyState, code: int) -> None:
        key = state.keys[code]
        assert key is not None
        for size in self.size_us:
            for spec in self.specs:
                state.series.pop((key, size, spec.name), None)
        del state.codes[key]
        state.keys[code], state.born[code] = None, GONE
        state.free.append(code)
        state.budget.removed(key[0])

    def _value(self, metric: str, w: dict, count: int, key: Key, size: str, state: AnomalyState) -> float | None:
        if metric == "throughput":  # any count: a drop to a trickle is what it is there for
            return count / (self.size_us[size] / US) if count else None
        if metric in ("cost_per_call", "tokens_per_call"):
            if count < self.cfg.min_events:
                return None
            value = self._read[metric](w, count)
            # a key that never reported cost (or tokens) has no such series
            return value if value or (key, size, metric) in state.series else None
        value = self._read[metric](w, count)
        return None if value is None else float(value)

    # ------------------------------------------------------------------ incidents

    def _effect(self, spec: MetricSpec, x: float, base: float) -> float:
        """How many times worse ``x`` is than ``base`` in an alerting direction (0: not at
        all, or not by ``min_abs``); quality counts its drop in points over ``min_abs``."""
        if abs(x - base) < spec.min_abs:
            return 0.0
        if spec.name == "quality_mean":
            return (base - x) / spec.min_abs if x < base else 0.0
        up = x / base if base > 0 else math.inf
        down = base / x if x > 0 else math.inf
        ratio = {"up": up if x > base else 0.0, "down": down if x < base else 0.0,
                 "both": up if x > base else down}[spec.direction]
        return ratio if ratio >= spec.min_ratio else 0.0

    def _severity(self, spec: MetricSpec, x: float, base: float, effect: float) -> str:
        if spec.name == "quality_mean":
            return "critical" if base - x >= self.cfg.critical_quality_drop else "warning"
        return "critical" if effect >= self.cfg.critical_ratio else "warning"

    def _judge(self, state: AnomalyState, key: Key, size: str, spec: MetricSpec, series: Series, x: float,
               score: float, end: int, w: dict, out: list[dict]) -> None:
        c = self.cfg
        lo, hi = series.detector.expected()
        inc = state.incidents.get((key, spec.name))
        if inc is None:
            if series.n <= c.warmup or not (math.isfinite(lo) and math.isfinite(hi)):
                series.streak = 0
                return
            centre = (lo + hi) / 2
            outside = {"up": x > hi, "down": x < lo, "both": x > hi or x < lo}[spec.direction]
            effect = self._effect(spec, x, centre) if outside else 0.0
            series.streak = series.streak + 1 if effect else 0
            if not effect or (score < c.alert_score and series.streak < c.sustain):
                return
            inc = Incident(id=incident_id(self.name, key, spec.name, end), opened_us=end,
                           severity=self._severity(spec, x, centre, effect), opened_by=size, baseline=centre,
                           peak_score=score, peak_observed=x, last_seen_us=end)
            state.incidents[(key, spec.name)] = inc
            self._deadline(state)
            test = ("streaming detector score >= alert level" if score >= c.alert_score
                    else f"out of the expected range {series.streak} windows in a row")
            out.append(self._signal("open", key, spec, inc, end, size, score,
                                    self._explain(test, x, centre, lo, hi, effect, w, size)))
            return
        if inc.opened_by != size:  # one incident per key + metric: other sizes fold in
            return
        inc.last_seen_us = end
        inc.since_signal += 1
        self._deadline(state)
        baseline = inc.baseline
        assert baseline is not None  # this processor opens every incident with one (the centre, above)
        effect = self._effect(spec, x, baseline)
        if effect:
            inc.calm = 0
            inc.peak_score = max(inc.peak_score, score)
            if inc.peak_observed is None or abs(x - baseline) > abs(inc.peak_observed - baseline):
                inc.peak_observed = x
            severity = self._severity(spec, x, baseline, effect)
            if more_severe(severity, inc.severity) and inc.since_signal >= c.update_every:
                inc.severity = severity
                out.append(self._signal("update", key, spec, inc, end, size, inc.peak_score,
                                        self._explain("severity rose", x, baseline, lo, hi, effect, w, size)))
            return
        inc.calm += 1
        if inc.calm >= c.resolve_windows:
            self._resolve(state, key, spec, inc, end, size, "back in range", x, out)

    def _resolve(self, state: AnomalyState, key: Key, spec: MetricSpec, inc: Incident, end: int, size: str,
                 reason: str, x: float | None, out: list[dict]) -> None:
        explanation = {"reason": reason, "observed": finite(x), "baseline": finite(inc.baseline),
                       "peak_observed": finite(inc.peak_observed), "peak_score": finite(inc.peak_score),
                       "window_size": size, "duration_s": finite((end - inc.opened_us) / US)}
        signal = self._signal("resolved", key, spec, inc, end, size, 0.0, explanation, severity="info")
        out.append(signal)
        del state.incidents[(key, spec.name)]
        self._deadline(state)

    def _signal(self, kind: str, key: Key, spec: MetricSpec, inc: Incident, end: int, size: str, score: float,
                explanation: dict[str, Any], severity: str | None = None) -> dict[str, Any]:
        if kind != "open":
            inc.signals += 1
            inc.since_signal = 0
        return signal_event(source=self.source, key=key, metric=spec.name, state=kind, incident=inc, ts_us=end,
                            window_start_us=end - self.size_us[size], score=score, explanation=explanation,
                            severity=severity)

    def _explain(self, test: str, x: float, centre: float, lo: float, hi: float, effect: float, w: dict,
                 size: str) -> dict[str, Any]:
        return {"test": test, "observed": finite(x), "baseline": finite(centre),
                "expected": [finite(lo), finite(hi)], "effect": finite(effect), "window_size": size,
                "window_count": w.get("count"), "latency_n": w.get("latency_n"), "quality_n": w.get("quality_n")}

    # ------------------------------------------------------------------ silence

    def _deadline(self, state: AnomalyState) -> None:
        """Recompute the earliest silence deadline (incidents are few; a scan is fine)."""
        deadlines = [self._due(inc) for inc in state.incidents.values()]
        state.next_deadline = min(deadlines, default=2**62)

    def _due(self, inc: Incident) -> int:
        return inc.last_seen_us + self.cfg.silence_windows * self.size_us[inc.opened_by]

    def _silence(self, state: AnomalyState, end: int, out: list[dict]) -> None:
        """Resolve (``no data``) the incidents whose deadline every window before ``end`` passed."""
        for (key, metric), inc in sorted(state.incidents.items(), key=lambda item: (self._due(item[1]), item[1].id)):
            due = self._due(inc)
            if due < end:
                self._resolve(state, key, METRICS[metric], inc, due, inc.opened_by, "no data", None, out)
