"""Per-program drift detection: a reference sample against each closed window's sample.

A ``DriftDetector`` is fed one flat feature dict per execution (``execution_features``
builds it from an ``execution`` event) and, when the caller closes an event-time window,
tests every feature of the window against the reference and returns ``DriftFinding``s:

* numeric values (``duration_ms``, ``tokens_in``, ``inputs.q.len``): Kolmogorov-Smirnov,
  effect = KS distance D; Wasserstein distance and PSI are reported alongside;
* strings and booleans (``route``, ``status``, ``inputs.q.type``): chi-square, effect =
  Jensen-Shannon distance;
* integer vectors (the text sketches ``inputs.q.hv``): MMD (or a domain classifier), both
  calibrated by seeded label permutations; effect = the domain classifier's AUC;
* ``quality`` (feedback scores in [0, 1]): a one-sided Welch test for a drop of the mean,
  on the window alone and pooled with the previous window(s), against the reference or a
  pinned golden baseline.

False alarms: each window spends a family-wise budget ``alpha`` by weighted Bonferroni
(``quality_share`` of it on the quality looks, the rest split evenly over the other
tests), and a feature is flagged only if its effect also reaches the feature kind's
minimum, so very large windows do not flag trivial shifts. Findings are per window: a
drift that persists is found again each window (grouping into one incident is the
caller's job), until ``rebaseline`` accepts it as the new normal.

Reference: with ``reference = "7d"`` (the daemon's default) the clean windows of the last
7 days at the same time of the season, by hour of the day (``seasonal``), so a daily
cycle is not a drift, and windows with findings stay out of it; with ``reference = ""``
the first ``reference_windows`` non-empty windows, then frozen.  Or a pinned sample
(``pin_reference``) and/or golden quality scores (``pin_quality_baseline``).  Testing
starts once ``reference_windows`` windows have formed the reference; a window closed
without any test says why in ``last_window`` (``not_tested``).

Length and content: each text field gives two features, ``<side>.<field>.len`` (its
length, KS) and ``<side>.<field>.text`` (its sketch, MMD), and the content test
relabels within length strata, so texts that only grew longer drift in ``.len`` alone.
Memory is bounded: seeded reservoirs for numbers and vectors, capped category counts,
exact running moments for quality, at most ``max_features`` features per detector.
No wall clock; randomness comes from ``seed`` by a counter hash, so the same inputs
always give the same findings and ``to_state()`` (plain JSON types) restores a detector
that continues exactly as the original would.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from adaptd.streams.processors.drift import seasonal
from adaptd.streams.processors.drift import stats as ds
from adaptd.streams.processors.drift.execution import QUALITY, execution_features, named_fields
from adaptd.streams.processors.drift.sample import Reservoir as _Reservoir
from adaptd.streams.processors.drift.sample import mix as _mix

OTHER = "<other>"
__all__ = ["OTHER", "QUALITY", "DriftConfig", "DriftDetector", "DriftFinding", "execution_features", "named_fields"]


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """Detector settings; every field is a JSON scalar so the config travels in the state."""

    reference_windows: int = 5  # non-empty windows that form the reference
    alpha: float = 1e-4  # family-wise false-alarm probability per window
    quality_share: float = 0.5  # share of alpha spent on quality (when it is tested)
    quality_windows: int = 2  # quality is also tested on the last this-many windows pooled
    min_samples: int = 50  # per side, below which a feature is not tested
    numeric_min_effect: float = 0.1  # KS distance D
    categorical_min_effect: float = 0.1  # Jensen-Shannon distance (base 2)
    text_test: str = "mmd"  # p-value from "mmd" or from the "classifier" (permutation-calibrated)
    text_min_auc: float = 0.55  # domain classifier AUC, the text effect size either way
    quality_min_drop: float = 0.05  # 5 points on a [0, 1] score
    reference_size: int = 1000  # reservoir of values per numeric feature
    window_size: int = 1000
    text_reference_size: int = 500  # reservoir of sketches per text feature
    text_window_size: int = 500
    max_features: int = 64
    max_categories: int = 32
    top_k: int = 5
    seed: int = 0
    #: The reference in event time, e.g. "7d": the last 7 days by bucket of the season
    #: (see ``seasonal``); windows with findings stay out of it.  "": the first
    #: ``reference_windows`` windows, frozen.  Either way testing starts once
    #: ``reference_windows`` windows have formed the reference.
    reference: str = ""
    season: str = "1d"  # the cycle the reference follows ("7d" for weekly cycles)
    season_buckets: int = 24  # buckets per season: hours of the day
    season_spread: int = 1  # neighbour buckets pooled on each side (+-1 hour)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 <= self.quality_share <= 1:
            raise ValueError("alpha must be in (0, 1) and quality_share in [0, 1]")
        if self.text_test not in ("mmd", "classifier"):
            raise ValueError(f"text_test must be 'mmd' or 'classifier', not {self.text_test!r}")
        if min(self.reference_windows, self.quality_windows, self.min_samples, self.reference_size, self.window_size,
               self.text_reference_size, self.text_window_size, self.max_features, self.max_categories) < 1:
            raise ValueError("window counts, sample sizes and caps must be >= 1")
        seasonal.parse_season(self.reference, self.season, self.season_buckets, self.season_spread)


@dataclasses.dataclass(frozen=True)
class DriftFinding:
    """One drifted feature in one window, with what was tested and why it passed."""

    feature: str
    kind: str  # "numeric" | "categorical" | "text" | "quality"
    test: str  # "ks" | "chi2" | "domain_auc" | "mmd" | "welch_t"
    statistic: float
    p_value: float
    threshold: float  # p-value threshold after the multiple-testing correction
    effect: float  # KS D, Jensen-Shannon distance, domain AUC (text) or quality drop
    min_effect: float
    n_reference: int  # values observed; tests use a seeded sample of at most the reservoir size
    n_current: int
    window_index: int
    window_end: Any  # as given to close_window (event time)
    details: dict[str, Any]
    top: list[dict[str, Any]]  # the window's most drifted features, most first

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if hasattr(self.window_end, "isoformat"):
            out["window_end"] = self.window_end.isoformat()
        return out


class _Result(NamedTuple):
    """One test of one feature in one window, before the multiple-testing decision."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    effect: float
    min_effect: float
    n_reference: int
    n_current: int
    details: Callable[[], dict[str, Any]]  # computed only for flagged features

    @property
    def excess(self) -> float:
        """How far the effect is past its minimum, comparable across kinds (an AUC's
        no-drift value is 0.5, the other effects' 0)."""
        base = 0.5 if self.kind == "text" else 0.0
        return (self.effect - base) / max(self.min_effect - base, 1e-9)


def _kind(value: Any) -> str | None:
    """The feature kind a first value fixes: numeric, categorical, text, or None (unusable)."""
    if isinstance(value, (str, bool)):
        return "categorical"
    if isinstance(value, (int, float)):
        return "numeric" if math.isfinite(value) else None
    if isinstance(value, (list, tuple)) and value:
        if len(value) > 1 and all(isinstance(v, int) and not isinstance(v, bool) and -128 < v < 128 for v in value):
            return "text"
        if all(isinstance(v, str) for v in value):
            return "categorical"
    return None


class _Feature:
    """Reference and current sample of one feature (numeric, categorical or text)."""

    def __init__(self, name: str, kind: str, width: int, cfg: DriftConfig) -> None:
        self.name, self.kind, self.width = name, kind, width
        self.base = _mix(cfg.seed ^ (zlib.crc32(name.encode()) << 20))
        self.slots = seasonal.FeatureSlots(kind, width, self.base)  # the rolling reference, if any
        if kind == "categorical":
            self.counts: list[dict[str, int]] = [{}, {}]
        else:
            caps = (cfg.reference_size, cfg.window_size) if kind == "numeric" else (cfg.text_reference_size, cfg.text_window_size)
            self.res = [self._new(side, 0, caps[side]) for side in (0, 1)]
            # A text's length beside its sketch (NaN: unknown): the same key keeps the rows
            # of both reservoirs aligned, so the content test can hold length fixed.
            self.lens = [self._new(side, 0, caps[side], "d") for side in (0, 1)] if kind == "text" else []

    def _new(self, side: int, epoch: int, cap: int, typecode: str | None = None) -> _Reservoir:
        key = _mix(self.base ^ (side << 62) ^ epoch) >> 11  # 53 bits: exact in any JSON reader
        width = 1 if typecode == "d" else self.width
        return _Reservoir(cap, width, key, typecode or ("d" if self.kind == "numeric" else "b"))

    def add(self, side: int, value: Any, cfg: DriftConfig, length: Any = None) -> bool:
        """Add ``value`` to the reference (side 0) or current (1) sample; False if it is
        not a value of this feature's kind (then nothing is added).  ``length``: a text
        sketch's text length (its ``.len`` sibling), if known."""
        if self.kind == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            self.res[side].add(float(value))
        elif self.kind == "categorical":
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                value = ",".join(value)  # TypeError on non-strings: the caller counts it
            elif not isinstance(value, str):
                return False
            c = self.counts[side]
            if value not in c and len(c) >= cfg.max_categories:
                value = OTHER
            c[value] = c.get(value, 0) + 1
        else:
            if not isinstance(value, (list, tuple)) or len(value) != self.width:
                return False
            self.res[side].add(array("b", value))  # OverflowError outside [-128, 127]
            known = isinstance(length, (int, float)) and not isinstance(length, bool) and math.isfinite(length)
            self.lens[side].add(float(length) if known else math.nan)
        return True

    def n(self, side: int) -> int:
        return sum(self.counts[side].values()) if self.kind == "categorical" else self.res[side].seen

    def reset(self, side: int, epoch: int) -> None:
        if self.kind == "categorical":
            self.counts[side] = {}
        else:
            self.res[side] = self._new(side, epoch, self.res[side].cap)
            if self.lens:
                self.lens[side] = self._new(side, epoch, self.res[side].cap, "d")

    def fold(self, slot: int, cfg: DriftConfig, season: seasonal.Season) -> None:
        """Add the current window's sample to the rolling reference's ``slot``."""
        if self.kind == "categorical":
            current: Any = self.counts[1]
        else:
            current = self.res[1] if self.kind == "numeric" else (self.res[1], self.lens[1])
        size = cfg.reference_size if self.kind == "numeric" else cfg.text_reference_size
        self.slots.fold(slot, seasonal.slice_cap(season, size), current, cfg.max_categories, OTHER)

    def _reference(self, slots: list[int] | None) -> tuple[int, Any]:
        """``(values seen, sample)`` of the frozen reference (``slots`` None) or of the
        rolling reference's ``slots``; for text ``(sketches, lengths)``."""
        if slots is not None:
            return self.slots.gather(slots)
        if self.kind == "categorical":
            return self.n(0), self.counts[0]
        if self.kind == "numeric":
            return self.n(0), self.res[0].values()
        return self.n(0), (self.res[0].values(), self.lens[0].values())

    def test(self, cfg: DriftConfig, seed: int, slots: list[int] | None = None) -> _Result | None:
        """The current sample against the reference (the rolling reference's ``slots`` when
        given); None with < ``min_samples`` on a side."""
        n_ref, reference = self._reference(slots)
        n_cur = self.n(1)
        if min(n_ref, n_cur) < cfg.min_samples:
            return None
        res = functools.partial(_Result, self.name, self.kind, n_reference=n_ref, n_current=n_cur)
        if self.kind == "numeric":
            r, c = reference, self.res[1].values()
            ks = ds.ks_2samp(r, c)
            return res("ks", ks.statistic, ks.p_value, ks.statistic, cfg.numeric_min_effect, details=lambda: _numeric_details(r, c))
        if self.kind == "categorical":
            ref_counts, cur_counts = reference, self.counts[1]
            chi = ds.chi_square(ref_counts, cur_counts)
            js = ds.jensen_shannon(ref_counts, cur_counts)
            return res("chi2", chi.statistic, chi.p_value, js, cfg.categorical_min_effect,
                       details=lambda: _categorical_details(ref_counts, cur_counts, chi))
        (r, ref_lens), c = reference, self.res[1].values()
        # Relabelled within length strata: a change of length alone (which changes how
        # dense the sketches are) is the ``.len`` feature's finding, not a content drift.
        strata = ds.length_strata(ref_lens, self.lens[1].values())
        held = {"length_held": strata is not None}
        if cfg.text_test == "mmd":
            # MMD decides (the more powerful test on topic mixtures); the classifier's AUC,
            # which reads as "how separable", is the effect size.
            m = ds.mmd(r, c, seed=seed, strata=strata)
            auc = ds.domain_classifier_auc(r, c, seed=seed, permutations=0).auc
            return res("mmd", m.mmd2, m.p_value, auc, cfg.text_min_auc,
                       details=lambda: {"domain_auc": auc, "p_perm": m.p_perm, "bandwidth": m.bandwidth, **held})
        d = ds.domain_classifier_auc(r, c, seed=seed, strata=strata)
        return res("domain_auc", d.auc, d.p_value, d.auc, cfg.text_min_auc,
                   details=lambda: {"p_perm": d.p_perm, "null_mean": d.null_mean, "null_sd": d.null_sd, **held})

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"kind": self.kind, "width": self.width}
        if self.kind == "categorical":
            s["counts"] = [dict(c) for c in self.counts]
        else:
            s["res"] = [r.state() for r in self.res]
            if self.lens:
                s["lens"] = [r.state() for r in self.lens]
        if self.slots.slots:
            s["slots"] = self.slots.state()
        return s

    @classmethod
    def load(cls, name: str, s: Mapping[str, Any], cfg: DriftConfig) -> _Feature:
        f = cls(name, s["kind"], s["width"], cfg)
        if f.kind == "categorical":
            f.counts = [dict(c) for c in s["counts"]]
        else:
            f.res = [_Reservoir.load(r, "d" if f.kind == "numeric" else "b") for r in s["res"]]
            if f.kind == "text":
                f.lens = [_Reservoir.load(r, "d") for r in s["lens"]]
        f.slots.load(s.get("slots", {}))
        return f


def _given(details: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """``details`` as a ``_Result.details`` (already computed: returned as is)."""
    return lambda: details


def _numeric_details(r: np.ndarray, c: np.ndarray) -> dict[str, float]:
    w = ds.wasserstein(r, c)
    sd = float(np.std(r))
    return {"wasserstein": w, "wasserstein_per_sd": w / sd if sd > 0 else 0.0, "psi": ds.psi(r, c),
            "ref_median": float(np.median(r)), "cur_median": float(np.median(c))}


def _categorical_details(r: Mapping[str, int], c: Mapping[str, int], chi: ds.ChiSquare) -> dict[str, Any]:
    nr, nc = sum(r.values()), sum(c.values())
    delta = {k: c.get(k, 0) / nc - r.get(k, 0) / nr for k in set(r) | set(c)}
    moved = sorted(delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:3]
    return {"dof": chi.dof, "share_change": {k: round(v, 4) for k, v in moved}}


def _m(s: Any) -> ds.Moments:
    return ds.Moments(*s) if s else ds.Moments()


class DriftDetector:
    """Drift detector of one program (see the module docstring).

    ``observe`` adds an execution's features to the current window (to the reference
    while it is still being formed); ``close_window`` tests the window and starts the
    next one.
    """

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self._features: dict[str, _Feature] = {}
        self._ready = False  # reference complete and frozen
        self._warm = 0  # non-empty windows folded into the reference so far
        self._epoch = 0  # reference generation (rebaseline)
        cfg = self.config
        self._season = seasonal.parse_season(cfg.reference, cfg.season, cfg.season_buckets, cfg.season_spread)
        self._rolling = self._season is not None  # off once a reference is pinned
        self._q_slots: dict[int, ds.Moments] = {}  # rolling reference of quality, per slot
        self._window = 0  # windows closed
        self._observed = 0  # executions in the current window
        self._q_ref = ds.Moments()
        self._q_golden = False
        self._q_cur = ds.Moments()
        self._q_prev: list[ds.Moments] = []  # previous tested windows, oldest first
        #: The last closed window: ``{"state": "tested", "tests": k, ...}`` or
        #: ``{"state": "not_tested", "reason": code, "detail": text, ...}``; None before any.
        self.last_window: dict[str, Any] | None = None
        self.dropped_features = 0  # features ignored past max_features
        self.invalid_values = 0  # values of no known kind, or not the feature's kind

    # ------------------------------------------------------------------ feeding
    def observe(self, features: Mapping[str, Any]) -> None:
        """Add one execution's flat feature dict (see ``execution_features``).

        ``None`` values are skipped; a value of the wrong kind for its feature (the first
        value seen fixes the kind) or of no known kind is counted in ``invalid_values``.
        Never raises on bad values.
        """
        self._observed += 1
        side = 1 if self._ready or self._rolling else 0
        cfg = self.config
        for name, value in features.items():
            if value is None:
                continue
            if name == QUALITY:
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    if self._ready or self._q_golden or self._rolling:
                        self._q_cur = self._q_cur.add(float(value))
                    else:
                        self._q_ref = self._q_ref.add(float(value))
                else:
                    self.invalid_values += 1
                continue
            f = self._features.get(name)
            if f is None:
                kind = _kind(value)
                if kind is None:
                    self.invalid_values += 1
                    continue
                if len(self._features) >= cfg.max_features:
                    self.dropped_features += 1
                    continue
                f = self._features[name] = _Feature(name, kind, len(value) if kind == "text" else 1, cfg)
            try:
                length = features.get(name[: -len(".text")] + ".len") if f.kind == "text" and name.endswith(".text") else None
                ok = f.add(side, value, cfg, length)
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                self.invalid_values += 1

    def pin_reference(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Make ``rows`` (feature dicts) the frozen reference, replacing any other.

        The current window is kept. Quality in ``rows`` becomes the quality baseline
        unless a golden baseline is pinned. Empty ``rows`` give an empty reference: no
        feature is tested until the detector is re-pinned or rebaselined.
        """
        self._reset_reference()
        self._ready = self._rolling = False
        keep_cur = self._q_cur
        for row in rows:
            self.observe(row)
            self._observed -= 1
        self._q_cur = keep_cur
        self._ready = True

    def pin_quality_baseline(self, scores: Iterable[float]) -> None:
        """Make golden-set ``scores`` the quality baseline, tested from the next window on,
        even while the input reference is still forming. Fewer than two scores disable the
        quality test until rebaselined."""
        self._q_ref = ds.Moments.of(float(s) for s in scores if math.isfinite(s))
        self._q_golden = True

    def rebaseline(self) -> None:
        """Forget the reference (not a golden quality baseline) and form a new one from
        the next ``reference_windows`` non-empty windows, e.g. after a drift is accepted."""
        self._reset_reference()
        self._ready = False
        for f in self._features.values():
            f.reset(1, self._window)
        self._q_cur, self._q_prev = ds.Moments(), []

    def _reset_reference(self) -> None:
        self._epoch += 1
        self._warm = 0
        self._q_slots.clear()
        for f in self._features.values():
            f.reset(0, self._epoch)
            f.slots.clear()
        if not self._q_golden:
            self._q_ref = ds.Moments()

    # ---------------------------------------------------------------- windows
    def close_window(self, window_end: Any = None, window_start: int | None = None) -> list[DriftFinding]:
        """Test the window just ended against the reference and start a new window.

        With a rolling reference (``DriftConfig.reference``) the window is
        ``[window_start, window_end)`` in integer microseconds of event time: it is tested
        against its slots of the season, then, when nothing drifted, becomes part of them.

        Returns the drifted features, most drifted first; empty while the reference is
        forming (except quality against a golden baseline), when nothing drifted, or when
        no feature has ``min_samples`` values on both sides (``last_window`` says which).

        Raises:
            ValueError: a rolling reference without integer window times.
        """
        cfg = self.config
        slot = slots = None
        if self._rolling:
            if not isinstance(window_end, int) or not isinstance(window_start, int):
                raise ValueError("a rolling drift reference needs window_start and window_end in microseconds")
            assert self._season is not None
            slot = seasonal.slot_of(self._season, window_start, window_end)
            slots = seasonal.reference_slots(self._season, slot)
        self._window += 1
        results: list[_Result] = []
        if self._ready:
            # The matrices are small (~1000 x 32): BLAS threads only add contention.
            with threadpool_limits(1, user_api="blas"):
                for f in self._features.values():
                    r = f.test(cfg, seed=cfg.seed + self._window, slots=slots)
                    if r is not None:
                        results.append(r)
        quality = self._quality_results(slots) if (self._ready or self._q_golden) else []
        self.last_window = self._status(len(results) + len(quality))
        findings = self._judge(results, quality, window_end)
        self._roll(slot, bool(findings))
        return findings

    def _status(self, tests: int) -> dict[str, Any]:
        """What the window being closed was: tested (by how many tests) or not, and why."""
        cfg = self.config
        if tests:
            return {"state": "tested", "tests": tests, "executions": self._observed}
        if not self._ready:
            reason, detail = "reference_forming", (f"the reference is forming: {self._warm} of "
                                                   f"{cfg.reference_windows} windows")
        elif self._observed < cfg.min_samples:
            reason, detail = "too_few_executions", (f"{self._observed} executions in the window; a feature is"
                                                    f" tested from {cfg.min_samples} (min_samples)")
        else:
            reason, detail = "no_comparable_reference", (f"no feature has {cfg.min_samples} values (min_samples)"
                                                         " in both the window and its reference")
        return {"state": "not_tested", "reason": reason, "detail": detail, "executions": self._observed}

    def _quality_results(self, slots: list[int] | None) -> list[_Result]:
        cfg, out = self.config, []
        q_ref = self._q_ref
        if slots is not None and not self._q_golden:  # the rolling reference's slots
            q_ref = ds.Moments()
            for s in slots:
                q_ref = q_ref.merge(self._q_slots.get(s, ds.Moments()))
        looks = [self._q_cur]
        pooled = self._q_cur
        for prev in self._q_prev:  # _roll keeps only the last quality_windows - 1
            pooled = pooled.merge(prev)
        if pooled.n > self._q_cur.n:
            looks.append(pooled)
        base = "golden" if self._q_golden else "reference"
        for i, cur in enumerate(looks):
            if cur.n < cfg.min_samples or q_ref.n < (2 if self._q_golden else cfg.min_samples):
                continue
            q = ds.quality_drop(q_ref, cur)
            details = {"baseline": base, "ref_mean": q_ref.mean, "cur_mean": cur.mean,
                       "windows": 1 if i == 0 else 1 + len(self._q_prev)}
            out.append(_Result(QUALITY, QUALITY, "welch_t", q.statistic, q.p_value, q.drop, cfg.quality_min_drop,
                               q_ref.n, cur.n, _given(details)))
        return out

    def _judge(self, results: list[_Result], quality: list[_Result], window_end: Any) -> list[DriftFinding]:
        """Weighted Bonferroni over this window's tests, then the minimum effects."""
        cfg = self.config
        share = cfg.quality_share if results and quality else (1.0 if quality else 0.0)
        a_q = cfg.alpha * share / len(quality) if quality else 0.0
        a_f = cfg.alpha * (1 - share) / len(results) if results else 0.0
        flagged: dict[str, tuple[_Result, float]] = {}  # per feature, its most drifted look
        for r, a in [(r, a_f) for r in results] + [(q, a_q) for q in quality]:
            if r.p_value <= a and r.effect >= r.min_effect:
                best = flagged.get(r.feature)
                if best is None or r.excess > best[0].excess:
                    flagged[r.feature] = (r, a)
        ranked = sorted(flagged.values(), key=lambda ra: (-ra[0].excess, ra[0].feature))
        top = [{"feature": r.feature, "test": r.test, "effect": float(r.effect), "p_value": float(r.p_value)}
               for r, _ in ranked[: cfg.top_k]]
        return [
            DriftFinding(feature=r.feature, kind=r.kind, test=r.test, statistic=float(r.statistic),
                         p_value=float(r.p_value), threshold=a, effect=float(r.effect), min_effect=r.min_effect,
                         n_reference=r.n_reference, n_current=r.n_current, window_index=self._window,
                         window_end=window_end, details=r.details(), top=top)
            for r, a in ranked
        ]

    def _roll(self, slot: int | None = None, drifted: bool = False) -> None:
        """Start the next window; with a rolling reference, first fold this one into
        ``slot`` unless it ``drifted`` (a drift does not become its own reference)."""
        rolling = slot is not None
        if rolling:
            season = self._season
            assert season is not None and slot is not None
            if self._observed and not drifted:
                for f in self._features.values():
                    f.fold(slot, self.config, season)
                self._q_slots[slot] = self._q_slots.get(slot, ds.Moments()).merge(self._q_cur)
                self._warm += 1
                self._ready = self._warm >= self.config.reference_windows
            oldest = seasonal.oldest_kept(season, slot)
            for f in self._features.values():
                f.slots.prune(oldest)
            for s in [s for s in self._q_slots if s < oldest]:
                del self._q_slots[s]
        if self._ready or self._q_golden or rolling:
            keep = self.config.quality_windows - 1
            self._q_prev = (self._q_prev + [self._q_cur])[-keep:] if keep > 0 else []
            self._q_cur = ds.Moments()
        if self._ready or rolling:
            for f in self._features.values():
                f.reset(1, self._window)
        elif self._observed:
            self._warm += 1
            self._ready = self._warm >= self.config.reference_windows
        self._observed = 0

    @property
    def windows_closed(self) -> int:
        """Windows closed so far (the ``window_index`` of the last findings)."""
        return self._window

    @property
    def reference_ready(self) -> bool:
        """True once the reference is complete (or pinned) and windows are being tested."""
        return self._ready

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """The whole detector as JSON-compatible data (dicts, lists, str, int, float, bool)."""
        return {
            "v": 1,
            "config": dataclasses.asdict(self.config),
            "ready": self._ready, "warm": self._warm, "epoch": self._epoch,
            "window": self._window, "observed": self._observed,
            "q_ref": list(dataclasses.astuple(self._q_ref)), "q_golden": self._q_golden,
            "q_cur": list(dataclasses.astuple(self._q_cur)),
            "q_prev": [list(dataclasses.astuple(m)) for m in self._q_prev],
            "dropped_features": self.dropped_features, "invalid_values": self.invalid_values,
            "last_window": self.last_window, "rolling": self._rolling,
            "q_slots": {str(k): list(dataclasses.astuple(m)) for k, m in self._q_slots.items()},
            "features": {name: f.state() for name, f in self._features.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DriftDetector:
        """A detector equal to the one that produced ``state`` (``to_state``)."""
        if state.get("v") != 1:
            raise ValueError(f"unsupported drift detector state version {state.get('v')!r}")
        d = cls(DriftConfig(**state["config"]))
        d._ready, d._warm, d._epoch = state["ready"], state["warm"], state["epoch"]
        d._window, d._observed = state["window"], state["observed"]
        d._q_ref, d._q_golden, d._q_cur = _m(state["q_ref"]), state["q_golden"], _m(state["q_cur"])
        d._q_prev = [_m(m) for m in state["q_prev"]]
        d.dropped_features, d.invalid_values = state["dropped_features"], state["invalid_values"]
        d.last_window = state.get("last_window")
        d._rolling = state.get("rolling", d._rolling)
        d._q_slots = {int(k): _m(m) for k, m in state.get("q_slots", {}).items()}
        d._features = {name: _Feature.load(name, s, d.config) for name, s in state["features"].items()}
        return d
