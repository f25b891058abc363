"""The fast path of anomaly detection: error-rate bursts, straight from the event stream.

Waiting for a closed 10 s window plus the allowed lateness cannot signal a burst within
5 s of its start, so this source processor reads ``execution`` and ``lm_call`` events
themselves, per key ``(tenant, program, module, route, model)``, in log order:

- Each key has a clock: the highest of its own event times (an event time further than
  ``max_ahead_s`` past the event's watermark counts as that bound, so one skewed client
  cannot blind a key) and of the watermark when each of its events arrived.  An event
  counts in the 1 s *bucket of the key's clock* when it arrives; an event older than
  the clock by more than the longest window is stale (left to the history windows) and
  only counted in ``stale_events``.
- Sliding windows (10 s and 60 s by default) of bucket counts give, at every error event,
  the errors ``e`` and events ``n`` of the last ``w`` seconds.  The baseline rate ``p0``
  comes from the 10 minutes *before* the longest window (whole buckets that left it,
  integer counts, blended with a weak prior), so a burst cannot raise its own baseline.
- An incident opens at the first error event where, for some window,
  ``e >= min_errors``, ``e/n >= max(min_ratio * p0, p0 + min_delta)`` and the binomial
  tail ``P(X >= e | n, p0) <= 10**-alert_surprise`` (a key whose baseline holds fewer
  than ``min_baseline_events`` also needs ``e/n >= critical_rate``: without history only
  a gross failure is news).  The signal's ``ts`` (and ``window_end``) is that event's time.
- While open, the baseline is frozen (anomalous buckets are dropped, not learnt), and each
  completed bucket is judged: *calm* when no window is even mildly elevated (tail
  ``<= 10**-calm_surprise`` with a rate ``>= p0 + min_delta / 2``).  After ``resolve_s``
  calm buckets in a row a ``resolved`` signal is emitted, its time the end of the last
  calm bucket.  At the end of each batch the watermark moves open keys' clocks too
  (silence is calm), so a drained route's incident resolves without new events.
- The severity is ``critical`` once a window's rate reaches ``critical_rate`` (an
  ``update`` signal if the incident opened as ``warning``).

Bounded keys: a tenant holds at most ``max_keys_per_tenant`` keys.  A new key of a tenant
at its cap evicts the tenant's least recently seen key (last event time, ties by key) if it
has had no event for ``key_idle_s`` at the new event's watermark and has no open incident
(brought up to that watermark first); otherwise the event is refused (``keys_refused``).
The batch is run up to that event before the choice, so the choice sees the same state
under any batching.

Determinism: every decision is a function of the key's events in log order and of the
per-event watermarks (``EventBatch.wm``), with integer counts, so any cut of the log into
batches gives the same signals, ids and values.  Python runs per key and 1 s bucket (and
per bucket step while an incident is open); the events of a bucket are tested with
numpy in one go.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import bdtrc
from scipy.stats import binom

from adaptd.streams.processors.base import EXECUTION, LM_CALL, NO_WATERMARK, EventBatch, iso_us
from adaptd.streams.processors.incidents import Incident, finite, incident_id, signal_event
from adaptd.streams.processors.keys import GONE, KeyBudget, KeyTable, grow, key_of
from adaptd.streams.processors.windows import US

METRIC = "error_rate"
_MAX_SURPRISE = 300.0


@dataclass(frozen=True)
class BurstConfig:
    """Parameters of the error-burst detector (global, not per key)."""

    #: Bucket size (s): the time resolution of windows, baseline and resolution.
    bucket_s: int = 1
    #: Sliding windows (s), each a multiple of ``bucket_s``.
    windows_s: tuple[int, ...] = (10, 60)
    #: Baseline span (s) before the longest window, in blocks of ``baseline_block_s``.
    baseline_s: int = 600
    baseline_block_s: int = 10
    #: Prior blended into the baseline: ``prior_events`` events at ``prior_rate``.
    prior_rate: float = 0.02
    prior_events: float = 100.0
    #: Opening needs this many errors, this rate ratio and margin over the baseline ...
    min_errors: int = 5
    min_ratio: float = 2.0
    min_delta: float = 0.03
    #: ... and a binomial tail <= 10**-alert_surprise.
    alert_surprise: float = 6.0
    #: A bucket is calm when no window has a tail <= 10**-calm_surprise (with a rate of
    #: at least p0 + min_delta / 2); ``resolve_s`` calm seconds in a row resolve.
    calm_surprise: float = 2.0
    resolve_s: int = 30
    #: Window rate from which an incident is critical; until its baseline holds
    #: ``min_baseline_events`` a key (new, or back after a long pause) opens only from it.
    critical_rate: float = 0.2
    min_baseline_events: int = 200
    #: How far past its watermark an event time may move its key's clock.
    max_ahead_s: float = 60.0
    #: Most keys per tenant, and the event-time seconds without events after which one
    #: may make room for a new one (at least the baseline span plus the longest window).
    max_keys_per_tenant: int = 10_000
    key_idle_s: float = 900.0

    def __post_init__(self) -> None:
        if self.bucket_s < 1 or not self.windows_s or any(w < self.bucket_s or w % self.bucket_s
                                                        for w in self.windows_s):
            raise ValueError("BurstConfig: windows_s must be positive multiples of bucket_s >= 1")
        if self.baseline_block_s % self.bucket_s or self.baseline_s < self.baseline_block_s:
            raise ValueError("BurstConfig: baseline_block_s must be a multiple of bucket_s and <= baseline_s")
        if self.min_errors < 1 or self.resolve_s < self.bucket_s or not 0 < self.prior_rate < 1:
            raise ValueError("BurstConfig: min_errors >= 1, resolve_s >= bucket_s, 0 < prior_rate < 1")
        if not 0 < self.calm_surprise <= self.alert_surprise:
            raise ValueError("BurstConfig: 0 < calm_surprise <= alert_surprise")
        if self.max_keys_per_tenant < 1 or self.key_idle_s < self.baseline_s + max(self.windows_s):
            raise ValueError("BurstConfig: max_keys_per_tenant >= 1, key_idle_s >= baseline_s + the longest window")


@dataclass(slots=True)
class BurstKey:
    """One key's detector state (plain data)."""

    clock: int = NO_WATERMARK
    bucket: int | None = None
    #: ``[bucket, events, errors]`` of the non-empty buckets in the longest window.
    recent: deque = field(default_factory=deque)
    #: Their sums (the longest window's events and errors).
    recent_n: int = 0
    recent_e: int = 0
    #: ``[block, events, errors]`` of the baseline blocks, and their sums.
    blocks: deque = field(default_factory=deque)
    base_n: int = 0
    base_e: int = 0
    incident: Incident | None = None
    stale: int = 0


@dataclass(slots=True)
class BurstState:
    """The processor's state (pickled in snapshots)."""

    budget: KeyBudget
    keys: KeyTable = field(default_factory=KeyTable)
    per_key: list[BurstKey | None] = field(default_factory=list)
    #: Per key code: last event time (µs) and the seq at which the key was added (GONE: evicted).
    last: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    born: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seq: int = 0
    #: ``stale`` of evicted keys.
    retired_stale: int = 0
    #: Key codes with an open incident (the watermark drives them when silent).
    open: set = field(default_factory=set)
    #: The watermark after the previous batch (the one before this batch's first event).
    wm: int = NO_WATERMARK
    signals: int = 0


def surprise(errors: int | np.ndarray, events: int | np.ndarray, p0: float) -> Any:
    """-log10 P(X >= errors) for X ~ Binomial(events, p0), capped at 300; 0 for 0 errors."""
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(events, dtype=np.int64)  # bdtrc's (double, long, double) loop: n must be an integer
    tail = np.where(e > 0, bdtrc(np.maximum(e - 1, 0), n, p0), 1.0)
    return np.minimum(-np.log10(np.maximum(tail, 1e-300)), _MAX_SURPRISE)


class ErrorBurstProcessor:
    """Per-key error-burst detector on raw events.  Pure: see ``adaptd.streams.processors.base``."""

    kinds = frozenset({"execution", "lm_call"})

    def __init__(self, config: BurstConfig | None = None, *, name: str = "error_burst") -> None:
        self.cfg = c = config or BurstConfig()
        self.name, self.source = name, f"adaptd.{name}"
        self.bucket_us = c.bucket_s * US
        self.windows = [w // c.bucket_s for w in c.windows_s]  # in buckets
        self.span = max(self.windows)
        self.block = c.baseline_block_s // c.bucket_s
        self.blocks = c.baseline_s // c.baseline_block_s
        self.resolve = c.resolve_s // c.bucket_s
        self.horizon_us = self.span * self.bucket_us
        self.ahead_us = int(c.max_ahead_s * US)

    def config(self) -> dict[str, Any]:
        return {"version": 2, **asdict(self.cfg)}

    def initial_state(self) -> BurstState:
        return BurstState(budget=KeyBudget(self.cfg.max_keys_per_tenant, int(round(self.cfg.key_idle_s * US))))

    def metrics(self, state: BurstState) -> dict[str, Any]:
        return {"keys": len(state.keys), **state.budget.metrics(), "open_incidents": len(state.open),
                "signals": state.signals,
                "stale_events": sum(k.stale for k in state.per_key if k is not None) + state.retired_stale}

    # ------------------------------------------------------------------ batch

    def process(self, state: BurstState, batch: EventBatch, watermark: int) -> tuple[BurstState, list[dict]]:
        """Fold ``batch`` (log order, ``wm`` set) into ``state``; return the signals it caused.

        Returns:
            ``(state, signals)``: state updated in place; ``signal`` event dicts in event-time
            order (a key's signals keep their order).  An empty batch only lets the watermark
            resolve silent keys' incidents.

        Raises:
            ValueError: the batch has no per-event watermarks (``wm``).
        """
        out: list[dict] = []
        rows = np.flatnonzero((batch.kind == EXECUTION) | (batch.kind == LM_CALL))
        if len(rows):
            if len(batch.wm) != len(batch):
                raise ValueError("the batch needs per-event watermarks (EventBatch.wm)")
            self._admit(state, batch, rows, out)
        for code in state.keys.collect():
            state.per_key[code] = None
        for code in sorted(state.open):  # silent open keys follow the watermark
            self._tick(state, code, watermark, out)
        state.wm = max(state.wm, watermark)
        state.signals += len(out)
        out.sort(key=lambda s: s["ts"])  # stable: a key's own signals stay in order
        return state, out

    # ------------------------------------------------------------------ events

    def _admit(self, state: BurstState, batch: EventBatch, rows: np.ndarray, out: list[dict]) -> None:
        """Find or add each row's key, then run ``_events``.  A tenant with room for all its
        new keys takes them at once; a tenant at its cap goes event by event, and before
        an eviction the events up to it are run, so the victim is chosen on current state."""
        cats = (batch.tenant, batch.program, batch.module, batch.route, batch.model)
        s0 = state.seq
        state.seq += len(rows)
        codes = state.keys.lookup(cats, rows)
        absent = np.flatnonzero(codes < 0).tolist()
        pressed: set[str] = set()
        if absent:
            row_keys = {j: key_of(cats, int(rows[j])) for j in absent}
            first: dict = {}
            for j, k in row_keys.items():
                first.setdefault(k, j)
            new: dict[str, int] = {}
            for k in first:
                new[k[0]] = new.get(k[0], 0) + 1
            pressed = {t for t, n in new.items() if not state.budget.room(t, n)}
            made = {k: self._new_key(state, k, s0 + j, int(batch.ts[rows[j]])) for k, j in first.items() if k[0] not in pressed}
            for j, k in row_keys.items():
                if k[0] not in pressed:
                    codes[j] = made[k]
        done = 0
        if pressed:
            tenant_of = batch.tenant
            ts, wm = batch.ts[rows].tolist(), batch.wm[rows].tolist()
            budget = state.budget
            for j, i in enumerate(rows.tolist()):
                tenant = tenant_of.get(i) or "default"
                if tenant not in pressed:
                    continue
                code = int(codes[j])
                if code >= 0 and state.born[code] >= GONE:  # evicted earlier in this batch
                    code = -1
                if code >= 0:
                    state.last[code] = max(int(state.last[code]), ts[j])
                    continue
                k = key_of(cats, i)
                found = state.keys.index.get(k)
                if found is None:
                    if not budget.room(tenant):
                        victim = None
                        if budget.idle(tenant, wm[j], state.last, state.born):
                            self._run(state, batch, rows[done:j], codes[done:j], out)
                            done = j
                            victim = budget.victim(tenant, wm[j], state.last, state.born,
                                                   lambda c: self._evictable(state, c, wm[j], out))
                        if victim is None:
                            budget.refuse(tenant)
                            codes[j] = -1
                            continue
                        state.keys.remove(victim)
                        state.born[victim] = GONE
                        state.retired_stale += state.per_key[victim].stale  # type: ignore[union-attr]
                        budget.removed(tenant)
                    found = self._new_key(state, k, s0 + j, ts[j])
                codes[j] = found
        seen = codes >= 0
        if pressed:  # pressed tenants' last-seen times were kept event by event above
            names = batch.tenant.values
            seen &= ~np.isin(batch.tenant.codes[rows], [c for c, v in enumerate(names) if v in pressed])
        np.maximum.at(state.last, codes[seen], batch.ts[rows[seen]])
        self._run(state, batch, rows[done:], codes[done:], out)

    def _new_key(self, state: BurstState, key: tuple, seq: int, ts: int) -> int:
        code = state.keys.add(key)
        state.last = grow(state.last, code + 1, 0)
        state.born = grow(state.born, code + 1, GONE)
        state.last[code], state.born[code] = ts, seq
        while len(state.per_key) <= code:
            state.per_key.append(None)
        state.per_key[code] = BurstKey()
        state.budget.added(key[0] or "default", code, state.keys.texts[code], ts, seq)
        return code

    def _evictable(self, state: BurstState, code: int, wm: int, out: list[dict]) -> bool:
        """True when ``code`` has no open incident once its clock is at ``wm``."""
        if code in state.open:
            self._tick(state, code, wm, out)
        return state.per_key[code].incident is None  # type: ignore[union-attr]

    def _run(self, state: BurstState, batch: EventBatch, rows: np.ndarray, codes: np.ndarray, out: list[dict]) -> None:
        keep = codes >= 0
        if not keep.all():
            rows, codes = rows[keep], codes[keep]
        if len(rows):
            self._events(state, batch, rows, codes, out)

    def _events(self, state: BurstState, batch: EventBatch, rows: np.ndarray, codes: np.ndarray,
                out: list[dict]) -> None:
        """Count the events ``rows`` (of keys ``codes``) per key and bucket (numpy), then walk
        the runs of one key and bucket in order (Python), testing a run's error events together."""
        prev_wm = np.concatenate(([state.wm], batch.wm[:-1]))[rows]
        order = np.argsort(codes, kind="stable")  # by key, log order within a key
        rows, codes, prev_wm = rows[order], codes[order], prev_wm[order]
        ts, err = batch.ts[rows], batch.status_error[rows]
        n = len(rows)
        first = np.ones(n, bool)
        first[1:] = codes[1:] != codes[:-1]
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        keys = [state.per_key[c] for c in codes[starts].tolist()]
        clock0 = np.array([ks.clock for ks in keys], np.int64)
        # A key's clock after an event: the highest of its (bounded) event times and of the
        # watermarks its events arrived at; before an event: the same without the event.
        seen = np.maximum(np.minimum(ts, batch.wm[rows] + self.ahead_us), prev_wm)
        after = np.maximum(_cummax_by_group(seen, group), clock0[group])
        before = np.empty(n, np.int64)
        before[1:] = after[:-1]
        before[starts] = clock0
        before = np.maximum(before, prev_wm)
        fresh = ts >= before - self.horizon_us
        stale = np.bincount(group[~fresh], minlength=len(keys)).tolist()
        for ks, last, late in zip(keys, after[np.append(starts[1:], n) - 1].tolist(), stale):
            ks.clock = last
            ks.stale += late
        kept = np.flatnonzero(fresh)
        if not len(kept):
            return
        bucket, kgroup = after[kept] // self.bucket_us, group[kept]
        new_run = np.ones(len(kept), bool)
        new_run[1:] = (kgroup[1:] != kgroup[:-1]) | (bucket[1:] != bucket[:-1])
        run_at = np.flatnonzero(new_run)
        run_end = np.append(run_at[1:], len(kept))
        kerr = err[kept]
        run_errors = np.add.reduceat(kerr.astype(np.int64), run_at).tolist()
        group_codes = codes[starts].tolist()
        for s, e, g, b, errors in zip(run_at.tolist(), run_end.tolist(), kgroup[run_at].tolist(),
                                      bucket[run_at].tolist(), run_errors):
            code = group_codes[g]
            ks = keys[g]
            self._advance(state, code, b, out)
            fired = None if ks.incident is not None or not errors else self._test(ks, b, kerr[s:e], errors)
            if fired is None:
                self._add(ks, b, e - s, errors)
                continue
            early = int(kerr[s:s + fired + 1].sum())
            self._add(ks, b, fired + 1, early)
            self._open(state, code, int(ts[kept[s + fired]]), b, out)
            self._add(ks, b, e - s - fired - 1, errors - early)

    def _add(self, ks: BurstKey, b: int, events: int, errors: int) -> None:
        ks.recent_n += events
        ks.recent_e += errors
        if ks.recent and ks.recent[-1][0] == b:
            ks.recent[-1][1] += events
            ks.recent[-1][2] += errors
        else:
            ks.recent.append([b, events, errors])

    def _window(self, ks: BurstKey, last: int, w: int) -> tuple[int, int]:
        """(events, errors) of buckets ``(last - w, last]``."""
        if last == ks.bucket and w == self.span:  # the whole of ``recent``
            return ks.recent_n, ks.recent_e
        n = e = 0
        for b, bn, be in reversed(ks.recent):
            if b <= last - w:
                break
            if b <= last:
                n += bn
                e += be
        return n, e

    def _p0(self, ks: BurstKey) -> float:
        c = self.cfg
        return (ks.base_e + c.prior_rate * c.prior_events) / (ks.base_n + c.prior_events)

    def _test(self, ks: BurstKey, b: int, run_err: np.ndarray, errors: int) -> int | None:
        """Index in the run of the first error event that opens an incident, or None
        (``errors``: how many ``run_err`` holds)."""
        c = self.cfg
        p0 = self._p0(ks)
        need = max(c.min_ratio * p0, p0 + c.min_delta)
        if ks.base_n < c.min_baseline_events:  # no history yet: only a gross failure is news
            need = max(need, c.critical_rate)
        at = None
        first = None
        for w in self.windows:
            n0, e0 = self._window(ks, b, w)
            # At the k-th error of the run the window holds <= e0 + k errors of >= n0 + k
            # events: if even the run's end cannot pass, no event in it can (the usual case).
            if e0 + errors < c.min_errors or e0 + errors < need * (n0 + errors):
                continue
            if at is None:
                at = np.flatnonzero(run_err)
            n = n0 + at + 1
            e = e0 + np.arange(1, len(at) + 1)
            cand = np.flatnonzero((e >= c.min_errors) & (e >= need * n))
            if not len(cand):
                continue
            hit = cand[surprise(e[cand], n[cand], p0) >= c.alert_surprise]
            if len(hit) and (first is None or at[hit[0]] < first):
                first = int(at[hit[0]])
        return first

    # ------------------------------------------------------------------ buckets

    def _advance(self, state: BurstState, code: int, b: int, out: list[dict]) -> None:
        """Move key ``code`` to bucket ``b``: judge completed buckets while open, shift."""
        ks = state.per_key[code]
        assert ks is not None  # only held keys are advanced
        if ks.bucket is None:
            ks.bucket = b
            return
        while ks.incident is not None and ks.bucket < b:
            x = ks.bucket + 1
            self._judge(state, code, x, out)  # bucket x - 1 is complete
            self._shift(ks, x, learn=False)
        if ks.bucket < b:
            self._shift(ks, b, learn=True)

    def _shift(self, ks: BurstKey, b: int, learn: bool) -> None:
        """Make ``b`` the current bucket: buckets leaving the window feed the baseline
        (``learn``) or are dropped; baseline blocks too old are forgotten."""
        edge = b - self.span
        recent = ks.recent
        while recent and recent[0][0] <= edge:
            old, n, e = recent.popleft()
            ks.recent_n -= n
            ks.recent_e -= e
            if learn:
                blk = old // self.block
                if ks.blocks and ks.blocks[-1][0] == blk:
                    ks.blocks[-1][1] += n
                    ks.blocks[-1][2] += e
                else:
                    ks.blocks.append([blk, n, e])
                ks.base_n += n
                ks.base_e += e
        oldest = edge // self.block - self.blocks
        while ks.blocks and ks.blocks[0][0] <= oldest:
            _, n, e = ks.blocks.popleft()
            ks.base_n -= n
            ks.base_e -= e
        ks.bucket = b

    def _tick(self, state: BurstState, code: int, wm: int, out: list[dict]) -> None:
        """Move an open key's clock to the watermark at a batch's end (silence is calm).
        The key's next event would do the same (its clock includes the watermark), so this
        only makes a silent key's incident resolve without waiting for its next event."""
        ks = state.per_key[code]
        assert ks is not None  # only held keys are open
        if ks.incident is None or wm <= ks.clock:
            return
        ks.clock = wm
        self._advance(state, code, wm // self.bucket_us, out)

    # ------------------------------------------------------------------ incidents

    def _open(self, state: BurstState, code: int, t: int, b: int, out: list[dict]) -> None:
        ks, key = state.per_key[code], state.keys.keys[code]
        assert ks is not None and key is not None  # only held keys open incidents
        c = self.cfg
        p0 = self._p0(ks)
        best = max((self._stats(ks, b, w, p0) for w in self.windows), key=lambda s: s["surprise"])
        ks.incident = inc = Incident(
            id=incident_id(self.name, key, METRIC, t), opened_us=t,
            severity="critical" if best["rate"] >= c.critical_rate else "warning",
            opened_by=f"burst:{best['window_s']}s", baseline=p0, peak_observed=best["rate"], last_seen_us=t)
        inc.peak_score = self._score(best["surprise"])
        state.open.add(code)
        out.append(signal_event(source=self.source, key=key, metric=METRIC, state="open", incident=inc, ts_us=t,
                                window_start_us=t - best["window_s"] * US, score=inc.peak_score,
                                explanation=self._explain(best, p0, ks)))

    def _judge(self, state: BurstState, code: int, x: int, out: list[dict]) -> None:
        """Judge the windows ending with bucket ``x - 1`` for the open incident of ``code``."""
        ks, key = state.per_key[code], state.keys.keys[code]
        assert ks is not None and key is not None  # only held keys are judged
        inc, c = ks.incident, self.cfg
        assert inc is not None
        p0 = inc.baseline if inc.baseline is not None else self._p0(ks)
        mild = p0 + c.min_delta / 2
        stats = [self._stats(ks, x - 1, w, p0, mild) for w in self.windows]
        elevated = [s for s in stats if s["errors"] >= 2 and s["rate"] >= mild and s["surprise"] >= c.calm_surprise]
        t = x * self.bucket_us
        inc.calm = 0 if elevated else inc.calm + 1
        if elevated:
            worst = max(elevated, key=lambda s: s["surprise"])
            inc.peak_score = max(inc.peak_score, self._score(worst["surprise"]))
            inc.peak_observed = max(inc.peak_observed or 0.0, worst["rate"])
            if worst["rate"] >= c.critical_rate and inc.severity != "critical":
                inc.severity = "critical"
                out.append(signal_event(source=self.source, key=key, metric=METRIC, state="update", incident=inc,
                                        ts_us=t, window_start_us=t - worst["window_s"] * US,
                                        score=self._score(worst["surprise"]), explanation=self._explain(worst, p0, ks)))
                inc.signals += 1
        if inc.calm >= self.resolve:
            short = stats[self.windows.index(min(self.windows))]
            explanation = {"reason": "back in range", "calm_s": self.resolve * c.bucket_s,
                           "observed": finite(short["rate"]), "baseline": finite(p0),
                           "peak_observed": finite(inc.peak_observed), "peak_score": finite(inc.peak_score),
                           "opened_at": iso_us(inc.opened_us), "duration_s": finite((t - inc.opened_us) / US),
                           "test": "binomial tail of errors in sliding windows vs the baseline rate"}
            out.append(signal_event(source=self.source, key=key, metric=METRIC, state="resolved", incident=inc,
                                    ts_us=t, window_start_us=inc.opened_us, score=0.0, severity="info",
                                    explanation=explanation))
            ks.incident = None
            state.open.discard(code)

    def _stats(self, ks: BurstKey, last: int, w: int, p0: float, floor: float = 0.0) -> dict[str, Any]:
        """Events, errors, rate and surprise of the window ``(last - w, last]``; the
        surprise is left 0 when the rate is below ``floor`` (not needed then)."""
        n, e = self._window(ks, last, w)
        rate = e / n if n else 0.0
        tail = float(bdtrc(e - 1, n, p0)) if e and rate >= floor else 1.0
        return {"window_s": w * self.cfg.bucket_s, "events": n, "errors": e, "rate": rate,
                "surprise": min(-math.log10(max(tail, 1e-300)), _MAX_SURPRISE)}

    def _score(self, s: float) -> float:
        """Surprise -> [0, 1): 0.5 at the alert level (like ``Detector`` scores)."""
        return s / (s + self.cfg.alert_surprise)

    def _explain(self, s: dict[str, Any], p0: float, ks: BurstKey) -> dict[str, Any]:
        n = s["events"]
        # the highest error count this window could have held without alerting
        limit = float(binom.isf(10.0 ** -self.cfg.alert_surprise, n, p0)) if n else 0.0
        return {"test": "binomial tail of errors in a sliding window vs the baseline rate",
                "window_s": s["window_s"], "observed": finite(s["rate"]), "errors": s["errors"], "events": n,
                "baseline": finite(p0), "baseline_events": ks.base_n,
                "expected": [0.0, finite(limit / n) if n else None],
                "surprise": finite(s["surprise"]), "p_value": finite(10.0 ** -s["surprise"])}


def _cummax_by_group(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting at each new ``group`` (non-decreasing
    group numbers 0, 1, ...): one ``maximum.accumulate`` over ranks lifted per group."""
    if not len(values):
        return values
    uniq, rank = np.unique(values, return_inverse=True)
    lift = group.astype(np.int64) * len(uniq)  # < n * groups: no overflow for any batch
    return uniq[np.maximum.accumulate(rank.reshape(-1) + lift) - lift]
