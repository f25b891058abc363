"""The drift processor: per (tenant, program), input and quality drift as ``signal`` events.

A source processor over ``execution`` and ``feedback`` events.  Per key it keeps a
``DriftDetector`` (``drift_detector``) and feeds it:

- each *root* execution's features (``execution_features``: duration, tokens, cost,
  route / model / status, and per input and output field its length, type, keys and
  text sketch: ``inputs.question.len``, ``outputs.answer.text``..., named the same
  whatever the SDK entry point).  Roots only (``parent_id`` null, configurable): the program's calls, not the
  modules inside them, whose inputs and latencies are other populations;
- each numeric feedback ``score`` as ``quality``, joined to its execution by
  ``execution_id`` (the key comes from the execution, which must be a root of the same
  tenant, earlier in the log by at most ``join_events`` events; other feedback is counted
  as unmatched) and counted at *the feedback's own time*, so a late judgement lands in
  the current window instead of reopening a closed one.  Re-sent ids (within the same
  horizon) are counted once.  Ids are remembered per tenant: another tenant using the
  same id neither joins nor hides anything.

**Bounded keys.**  A tenant holds at most ``max_keys_per_tenant`` programs.  A new program
of a tenant at its cap evicts the tenant's least recently seen program (last event time,
ties by name) if it has had no event for ``key_idle_s`` at the new event's watermark and,
brought up to that watermark, has no open window data, pending events or incident;
otherwise its events are refused (``keys_refused``).  An evicted program that comes back
starts a new reference.  Decided per event in log order: replay and batching agree.

**Windows.**  Tumbling in event time, ``window`` long (5 min), aligned to the epoch, closed
when the watermark passes their end.  A window with fewer than ``min_executions``
executions is not closed but extended by another period (up to ``max_window_periods``):
the statistical tests need samples (a 10-point quality drop needs ~500 scores to be seen within two
windows), and time alone gives a quiet program windows too small to test while a busy
one fills any window.  So a drift window is "at least 5 minutes and at least 500
executions, at most 1 hour", always ending on a period boundary, which keeps windows
comparable with the history windows and explainable as a time span.  Events for a window
already closed are late (counted, left out); events ahead of the open window wait in a
bounded buffer until it moves on.  A key with nothing in its window and no open incident
skips ahead to the watermark (idle programs cost nothing).

**Not tested.**  A window closed without any test (the reference still forming, too few
executions for ``min_samples``, no feature with a reference at that hour) is counted
(``windows_not_tested``) and its program listed with the reason under ``not_tested`` in
``metrics`` (``/v1/stats``) until one of its windows is tested again.

**Cost.**  Observing an execution costs the detector ~20 µs.  A window whose predecessor
held more than ``sample_target`` executions observes a deterministic ``1 / 2**k`` of them
(by a hash of the execution id, so uniform over the window); the detector keeps samples
of ~1000 values anyway.  Every execution still counts and joins; scores are all observed.

**Incidents.**  A window with findings opens one incident per key (its metric is the most
drifted feature) and emits one ``open`` signal; further drifted windows fold into it,
with an ``update`` signal only when the severity rises or a feature not yet in the
incident drifts.  ``resolve_windows`` windows in a row without findings emit
``resolved``; so does ``accept_after_windows`` windows of drift when set (the detector is
rebaselined: the drift becomes the new normal).  Severity is ``critical`` for a quality
drop of ``critical_quality_drop`` or a finding ``critical_excess`` times its minimum
effect, else ``warning``.

Determinism: every decision is made per event in log order with that event's watermark
(``EventBatch.wm``), or at the batch's watermark for keys whose window it passes (which
advances them exactly as their next event would), so any cut of the log into batches
gives the same signals, ids and values per key.  Ids are UUIDv5 of the incident and the
signal's place in it.
"""

from __future__ import annotations

import heapq
import math
import uuid
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from adaptd.streams.events import SCHEMA_VERSION, derived_id
from adaptd.streams.processors.base import EXECUTION, FEEDBACK, EventBatch, iso_us
from adaptd.streams.processors.drift.detector import (
    QUALITY,
    DriftConfig,
    DriftDetector,
    DriftFinding,
    execution_features,
)
from adaptd.streams.processors.incidents import finite
from adaptd.streams.processors.keys import GONE, KeyBudget
from adaptd.streams.processors.windows import US, parse_size

#: Namespace of drift incident and signal ids.
DRIFT_NS = uuid.UUID("b7e2d4a1-3c6f-4e8a-9d15-6f0c2a7b8e43")
SEVERITIES = ("info", "warning", "critical")
_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1
#: Programs listed by name in the ``not_tested`` metrics (all are counted).
MAX_NOT_TESTED_LISTED = 50


@dataclass(frozen=True)
class DriftProcessorConfig:
    """Parameters of the drift processor (global, not per key)."""

    window: str = "5m"
    min_executions: int = 500
    max_window_periods: int = 12
    resolve_windows: int = 3
    #: Accept a drift as the new normal (rebaseline) after this many drifted windows; 0: never.
    accept_after_windows: int = 0
    roots_only: bool = True
    sample_target: int = 2000
    #: Feedback joins executions (and re-sent ids are recognised) within this many events.
    join_events: int = 100_000
    #: Events ahead of a key's open window kept until it moves on (more are dropped, counted).
    max_pending: int = 10_000
    #: Most programs per tenant, and the event-time seconds without events after which
    #: one may make room for a new one (None: the longest window, ``max_window_periods``
    #: windows, plus one).
    max_keys_per_tenant: int = 1_000
    key_idle_s: float | None = None
    critical_quality_drop: float = 0.15
    critical_excess: float = 4.0
    detector: DriftConfig = DriftConfig()
    #: ``(program, golden-set scores)`` pairs: that program's quality is tested against
    #: the golden scores' mean from its first window on, instead of against its first
    #: windows (every tenant's program of that name; a rebaseline keeps it).
    golden_quality: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def __post_init__(self) -> None:
        parse_size(self.window)
        if min(self.min_executions, self.max_window_periods, self.resolve_windows, self.sample_target,
               self.join_events, self.max_pending, self.max_keys_per_tenant) < 1 or self.accept_after_windows < 0:
            raise ValueError("DriftProcessorConfig: counts must be >= 1 (accept_after_windows >= 0)")


@dataclass(slots=True)
class DriftIncident:
    """An open drift episode of one key (plain data)."""

    id: str
    opened_us: int
    severity: str
    metric: str
    features: list[str]
    windows: int = 1  # windows since it opened, the opening one included
    clean: int = 0  # windows in a row without findings
    signals: int = 1
    peak_score: float = 0.0


@dataclass(slots=True)
class DriftKey:
    """One key's detector and open window ``[start, end)`` (µs; ``end`` moves by periods)."""

    detector: DriftDetector
    start: int
    end: int
    n: int = 0  # executions in the open window
    sampled: int = 0  # of which observed (not thinned out)
    scores: int = 0  # quality scores observed in it
    level: int = 0  # observe executions whose id hash has ``level`` low zero bits
    pending: list = field(default_factory=list)  # (ts, id or None, features) ahead of ``end``
    incident: DriftIncident | None = None
    windows: int = 0
    late: int = 0
    pending_dropped: int = 0
    thinned: int = 0
    untested: int = 0  # windows closed without any test
    #: The last closed window's test status (``DriftDetector.last_window`` + its end).
    status: dict | None = None


@dataclass(slots=True)
class DriftState:
    """The processor's state (pickled in snapshots)."""

    budget: KeyBudget
    #: Per key code: the key, its detector (None: a free code), its last event time (µs)
    #: and the seq at which it was added (``GONE`` once evicted).
    keys: list[tuple[str, str] | None] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    per_key: list[DriftKey | None] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    born: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    #: Counters of evicted keys (so the totals in ``metrics`` do not go back).
    retired: dict[str, int] = field(default_factory=dict)
    #: tenant -> (id -> ((key code + 1) << 40 | seq) for executions, seq otherwise); two generations.
    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    old_ids: dict[str, dict[str, int]] = field(default_factory=dict)
    gen_start: int = 0
    seq: int = 0
    #: (window end, key code) heap: keys whose open window the watermark may pass.
    due: list = field(default_factory=list)
    executions: int = 0
    scores: int = 0
    duplicates: int = 0
    feedback_unmatched: int = 0
    signals: int = 0


class DriftProcessor:
    """Per-program drift detection.  Pure: see ``adaptd.streams.processors.base``."""

    kinds = frozenset({"execution", "feedback"})
    columns = frozenset({"inputs", "outputs", "parent_id"})

    def __init__(self, config: DriftProcessorConfig | None = None, *, name: str = "drift") -> None:
        self.cfg = config or DriftProcessorConfig()
        self.name, self.source = name, f"adaptd.{name}"
        self.size = parse_size(self.cfg.window)
        self._golden = dict(self.cfg.golden_quality)
        idle = self.cfg.key_idle_s
        self.idle_us = (self.cfg.max_window_periods + 1) * self.size if idle is None else int(round(idle * US))

    def config(self) -> dict[str, Any]:
        return {"version": 3, **asdict(self.cfg)}

    def initial_state(self) -> DriftState:
        return DriftState(budget=KeyBudget(self.cfg.max_keys_per_tenant, self.idle_us))

    def metrics(self, state: DriftState) -> dict[str, Any]:
        per = [k for k in state.per_key if k is not None]
        old = state.retired

        def total(name: str) -> int:
            return sum(getattr(k, name) for k in per) + old.get(name, 0)

        return {"keys": len(state.index), **state.budget.metrics(), "executions": state.executions,
                "scores": state.scores, "duplicates": state.duplicates,
                "feedback_unmatched": state.feedback_unmatched, "late": {self.cfg.window: total("late")},
                "pending": sum(len(k.pending) for k in per), "pending_dropped": total("pending_dropped"),
                "thinned": total("thinned"), "windows_closed": total("windows"),
                "windows_not_tested": total("untested"), "not_tested": self._not_tested(state),
                "open_incidents": sum(k.incident is not None for k in per), "signals": state.signals}

    def _not_tested(self, state: DriftState) -> dict[str, Any]:
        """The programs whose last closed window was not tested, and why: counts per
        reason and the first ``MAX_NOT_TESTED_LISTED`` (by tenant, program)."""
        rows = []
        for key, ks in zip(state.keys, state.per_key):
            if key is not None and ks is not None and ks.status is not None and ks.status["state"] == "not_tested":
                rows.append({"tenant": key[0], "program": key[1], **ks.status})
        rows.sort(key=lambda r: (r["tenant"], r["program"]))
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return {"programs": len(rows), "reasons": reasons, "listed": rows[:MAX_NOT_TESTED_LISTED]}

    # ------------------------------------------------------------------ batch

    def process(self, state: DriftState, batch: EventBatch, watermark: int) -> tuple[DriftState, list[dict]]:
        """Fold ``batch`` (log order, ``wm`` set) into ``state``; return the signals of the
        windows that closed.

        Returns:
            ``(state, signals)``: state updated in place; ``signal`` event dicts ordered by
            time (a key's own signals in order).  An empty batch only closes windows.

        Raises:
            ValueError: the batch has no per-event watermarks (``wm``).
        """
        out: list[dict] = []
        rows = np.flatnonzero((batch.kind == EXECUTION) | (batch.kind == FEEDBACK))
        if len(rows):
            if len(batch.wm) != len(batch):
                raise ValueError("the batch needs per-event watermarks (EventBatch.wm)")
            self._fold(state, batch, rows.tolist(), out)
        while state.due and state.due[0][0] <= watermark:
            end, code = heapq.heappop(state.due)
            ks = state.per_key[code]
            if ks is not None and ks.end == end:  # else a stale entry: the key moved on (or was evicted)
                self._advance(state, code, ks, watermark, out)
        state.signals += len(out)
        out.sort(key=lambda s: s["ts"])  # stable: a key's own signals stay in order
        return state, out

    def _fold(self, state: DriftState, batch: EventBatch, rows: list[int], out: list[dict]) -> None:
        cfg = self.cfg
        kind, ids, ts, wm = batch.kind.tolist(), batch.id, batch.ts.tolist(), batch.wm.tolist()
        parents, inputs, outputs = batch.extra.get("parent_id"), batch.extra.get("inputs"), batch.extra.get("outputs")
        tenants, programs = batch.tenant, batch.program
        numbers = [batch.duration_ms.tolist(), batch.tokens_in.tolist(), batch.tokens_out.tolist(),
                   batch.cost_usd.tolist()]
        route, model, error = batch.route, batch.model, batch.status_error.tolist()
        score, parent_of = batch.score.tolist(), batch.execution_id
        codes: dict[tuple[int, int], tuple[int, int]] = {}  # (tenant, program) cat codes -> (code, born)
        horizon = cfg.join_events
        empty: dict[str, int] = {}
        for i in rows:
            if kind[i] == EXECUTION and cfg.roots_only and parents is not None and parents[i] is not None:
                continue
            event_id = ids[i]
            state.seq += 1
            seq = state.seq
            if seq - state.gen_start > horizon:  # per event, so independent of batch cuts
                state.old_ids, state.ids, state.gen_start = state.ids, {}, seq
            tenant = tenants.get(i) or "default"
            # Ids are per tenant: another tenant's id is neither a re-send nor a join.
            mine = state.ids.get(tenant)
            if mine is None:
                mine = state.ids[tenant] = {}
            older = state.old_ids.get(tenant, empty)
            seen = mine.get(event_id)
            if seen is None:
                seen = older.get(event_id)
            if seen is not None and seq - (seen & _SEQ_MASK) <= horizon:
                state.duplicates += 1
                continue
            if kind[i] == EXECUTION:
                pair = (int(tenants.codes[i]), int(programs.codes[i]))
                if pair[1] < 0:
                    continue
                cached = codes.get(pair)
                code = cached[0] if cached is not None and state.born[cached[0]] == cached[1] else -1
                if code < 0:
                    key = (tenant, programs.values[pair[1]])
                    code = state.index.get(key, -1)
                    if code < 0:
                        code = self._key(state, key, wm[i], ts[i], seq, out)
                    if code < 0:  # refused: the tenant is at its cap
                        mine[event_id] = seq
                        continue
                    codes[pair] = (code, state.born[code])
                mine[event_id] = ((code + 1) << _SEQ_BITS) | seq
                state.last[code] = max(state.last[code], ts[i])
                state.executions += 1
                item = None  # features are built only if observed
            else:
                mine[event_id] = seq
                s = score[i]
                parent = parent_of[i]
                found = None if parent is None else mine.get(parent)
                if found is None and parent is not None:
                    found = older.get(parent)
                code = -1 if found is None else (found >> _SEQ_BITS) - 1
                # an execution of an evicted program (its code gone or reused since) joins nothing
                if (code < 0 or seq - (found & _SEQ_MASK) > horizon  # type: ignore[operator]
                        or state.born[code] > (found & _SEQ_MASK)):  # type: ignore[operator]
                    state.feedback_unmatched += 1
                    continue
                state.last[code] = max(state.last[code], ts[i])
                if s != s:  # no numeric score: nothing to observe
                    continue
                state.scores += 1
                item = {QUALITY: s}
            ks = state.per_key[code]
            assert ks is not None  # the code was just looked up or added
            if wm[i] >= ks.end:
                self._advance(state, code, ks, wm[i], out)
            t = ts[i]
            if t < ks.start:
                ks.late += 1
                continue
            if item is None:
                row = {"duration_ms": _num(numbers[0][i]), "tokens_in": _num(numbers[1][i]),
                       "tokens_out": _num(numbers[2][i]), "cost_usd": _num(numbers[3][i]),
                       "route": route.get(i), "model": model.get(i), "status": "error" if error[i] else "ok",
                       "inputs": inputs[i] if inputs is not None else None,
                       "outputs": outputs[i] if outputs is not None else None}
                if t >= ks.end:
                    self._hold(ks, (t, event_id, execution_features(row)))
                else:
                    self._execution(ks, event_id, row, None)
            elif t >= ks.end:
                self._hold(ks, (t, None, item))
            else:
                ks.detector.observe(item)
                ks.scores += 1

    def _key(self, state: DriftState, key: tuple[str, str], wm: int, ts: int, seq: int, out: list[dict]) -> int:
        """Add ``key`` (new) at an event of time ``ts``, watermark ``wm``, number ``seq``;
        -1 when its tenant is at its cap and no program of it can make room."""
        budget = state.budget
        if not budget.room(key[0]):
            victim = budget.victim(key[0], wm, state.last, state.born,
                                   lambda c: self._evictable(state, c, wm, out))
            if victim is None:
                budget.refuse(key[0])
                return -1
            self._evict(state, victim)
        # Each program gets its own seed: independent samples and permutations per key.
        seed = self.cfg.detector.seed ^ zlib.crc32(f"{key[0]}\x1f{key[1]}".encode())
        start = wm // self.size * self.size
        detector = DriftDetector(replace(self.cfg.detector, seed=seed))
        golden = self._golden.get(key[1])
        if golden is not None:
            detector.pin_quality_baseline(golden)
        ks = DriftKey(detector, start, start + self.size)
        if state.free:
            code = state.free.pop()
            state.keys[code], state.per_key[code], state.last[code], state.born[code] = key, ks, ts, seq
        else:
            code = len(state.keys)
            state.keys.append(key)
            state.per_key.append(ks)
            state.last.append(ts)
            state.born.append(seq)
        state.index[key] = code
        budget.added(key[0], code, f"{key[0]}\x1f{key[1]}", ts, seq)
        heapq.heappush(state.due, (start + self.size, code))
        return code

    def _evictable(self, state: DriftState, code: int, wm: int, out: list[dict]) -> bool:
        """Bring ``code``'s program up to ``wm`` (as an event of it would); True when it
        then holds nothing but its detector: no window data, pending events or incident."""
        ks = state.per_key[code]
        assert ks is not None
        if wm >= ks.end:
            self._advance(state, code, ks, wm, out)
        return ks.incident is None and not ks.pending and not (ks.n or ks.scores)

    def _evict(self, state: DriftState, code: int) -> None:
        key, ks = state.keys[code], state.per_key[code]
        assert key is not None and ks is not None
        for name in ("late", "pending_dropped", "thinned", "windows", "untested"):
            state.retired[name] = state.retired.get(name, 0) + getattr(ks, name)
        del state.index[key]
        state.keys[code], state.per_key[code], state.born[code] = None, None, GONE
        state.free.append(code)
        state.budget.removed(key[0])

    def _hold(self, ks: DriftKey, item: tuple) -> None:
        if len(ks.pending) < self.cfg.max_pending:
            ks.pending.append(item)
        else:
            ks.pending_dropped += 1

    def _execution(self, ks: DriftKey, event_id: str, row: dict | None, features: dict | None) -> None:
        """Count an execution in the open window; observe it unless thinned out."""
        ks.n += 1
        if ks.level and zlib.crc32(event_id.encode()) & ((1 << ks.level) - 1):
            ks.thinned += 1
            return
        ks.detector.observe(features if features is not None else execution_features(row))  # type: ignore[arg-type]
        ks.sampled += 1

    # ------------------------------------------------------------------ windows

    def _advance(self, state: DriftState, code: int, ks: DriftKey, wm: int, out: list[dict]) -> None:
        """Move ``ks``'s open window past every period end <= ``wm`` (closing or extending it)."""
        size, cfg = self.size, self.cfg
        while ks.end <= wm:
            boundary = ks.end
            if not (ks.n or ks.scores) and ks.incident is None:
                if not ks.pending:  # idle: skip ahead (the same from any earlier point)
                    ks.start = wm // size * size
                    ks.end = ks.start + size
                    break
                ks.start = boundary  # an empty period is dropped, not merged into the window
            elif ks.n >= cfg.min_executions or (boundary - ks.start) // size >= cfg.max_window_periods:
                self._close(state, code, ks, boundary, out)
                ks.start = boundary
            ks.end = boundary + size
            if ks.pending:
                now = [p for p in ks.pending if p[0] < ks.end]
                if now:
                    ks.pending = [p for p in ks.pending if p[0] >= ks.end]
                    for _, event_id, features in now:
                        if event_id is None:
                            ks.detector.observe(features)
                            ks.scores += 1
                        else:
                            self._execution(ks, event_id, None, features)
        heapq.heappush(state.due, (ks.end, code))

    def _close(self, state: DriftState, code: int, ks: DriftKey, end: int, out: list[dict]) -> None:
        findings = ks.detector.close_window(window_end=end, window_start=ks.start)
        ks.windows += 1
        n, start = ks.n, ks.start
        status = ks.detector.last_window
        if status is not None:
            ks.status = {**status, "executions": n, "window_start": iso_us(start), "window_end": iso_us(end)}
            ks.untested += status["state"] == "not_tested"
        window = {"executions": n, "sampled": ks.sampled, "scores": ks.scores,
                  "window_index": ks.detector.windows_closed}
        ks.n = ks.sampled = ks.scores = 0
        # Thin the next window by the size of this one (a stable rate within the window).
        ks.level = max(0, math.ceil(math.log2(n / self.cfg.sample_target))) if n > self.cfg.sample_target else 0
        key, inc, cfg = state.keys[code], ks.incident, self.cfg
        assert key is not None
        if findings:
            severity, score = self._severity(findings), _score(findings[0])
            drifted = [f.feature for f in findings]
            if inc is None:
                inc = ks.incident = DriftIncident(
                    id=str(derived_id(DRIFT_NS, "incident", self.name, key[0], key[1], iso_us(end))),
                    opened_us=end, severity=severity, metric=findings[0].feature, features=drifted, peak_score=score)
                out.append(self._signal("open", key, inc, start, end, findings[0].feature, score, severity,
                                        _explain(findings, window)))
                return
            inc.windows += 1
            inc.clean = 0
            inc.peak_score = max(inc.peak_score, score)
            new = [f for f in drifted if f not in inc.features]
            inc.features += new
            rose = SEVERITIES.index(severity) > SEVERITIES.index(inc.severity)
            if rose or new:
                inc.severity = max(severity, inc.severity, key=SEVERITIES.index)
                reason = "severity rose" if rose else f"new drifted features: {', '.join(new)}"
                out.append(self._signal("update", key, inc, start, end, findings[0].feature, score, inc.severity,
                                        {"reason": reason, **_explain(findings, window)}))
            if cfg.accept_after_windows and inc.windows >= cfg.accept_after_windows:
                ks.detector.rebaseline()
                self._resolve(ks, key, start, end, "accepted as the new normal (rebaselined)", window, out)
            return
        if inc is not None:
            inc.windows += 1
            inc.clean += 1
            if inc.clean >= cfg.resolve_windows:
                self._resolve(ks, key, start, end, f"no drift in {inc.clean} windows in a row", window, out)

    def _resolve(self, ks: DriftKey, key: tuple[str, str], start: int, end: int, reason: str, window: dict,
                 out: list[dict]) -> None:
        inc = ks.incident
        assert inc is not None
        explanation = {"reason": reason, "drifted": list(inc.features), "peak_score": finite(inc.peak_score),
                       "windows": inc.windows, "duration_s": finite((end - inc.opened_us) / US), **window}
        out.append(self._signal("resolved", key, inc, start, end, inc.metric, 0.0, "info", explanation))
        ks.incident = None

    def _severity(self, findings: list[DriftFinding]) -> str:
        cfg = self.cfg
        for f in findings:
            if f.kind == QUALITY and f.effect >= cfg.critical_quality_drop:
                return "critical"
            if f.kind != QUALITY and _score(f) >= cfg.critical_excess:
                return "critical"
        return "warning"

    def _signal(self, state_name: str, key: tuple[str, str], inc: DriftIncident, start: int, end: int, metric: str,
                score: float, severity: str, explanation: dict[str, Any]) -> dict[str, Any]:
        if state_name != "open":
            inc.signals += 1
        return {
            "id": str(derived_id(DRIFT_NS, "signal", inc.id, state_name, inc.signals)),
            "ts": iso_us(end), "v": SCHEMA_VERSION, "kind": "signal", "tenant": key[0], "source": self.source,
            "attrs": {}, "signal_type": "drift", "state": state_name, "program": key[1], "module": None,
            "route": None, "model": None, "metric": metric, "score": finite(score), "severity": severity,
            "window_start": iso_us(start), "window_end": iso_us(end), "incident_id": inc.id,
            "explanation": explanation,
        }


def _num(x: float) -> float | None:
    return None if x != x else x


def _score(f: DriftFinding) -> float:
    """How many times its minimum effect a finding's effect is (from the no-drift value:
    0.5 for a domain AUC, 0 otherwise), comparable across tests; >= 1 when flagged."""
    base = 0.5 if f.kind == "text" else 0.0
    return (f.effect - base) / max(f.min_effect - base, 1e-9)


def _explain(findings: list[DriftFinding], window: dict) -> dict[str, Any]:
    top = findings[0]
    return {"feature": top.feature, "feature_kind": top.kind, "test": top.test, "statistic": finite(top.statistic),
            "p_value": finite(top.p_value), "threshold": finite(top.threshold), "effect": finite(top.effect),
            "min_effect": finite(top.min_effect), "n_reference": top.n_reference, "n_current": top.n_current,
            "details": _plain(top.details), "top": _plain(top.top), "drifted": [f.feature for f in findings],
            **window}


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: floats rounded by ``finite`` (NaN -> None), numpy scalars unwrapped."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite(float(value))
    return value
