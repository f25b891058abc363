"""The performance-history processor: closed tumbling windows per key, as ``window`` events.

Key: ``(tenant, program, module, route, model)``.  Windows: 10 s, 1 min and 1 h by
default (each size must divide the next).  Per closed window of a key it emits one
``window`` event (``adaptd.streams.events.PerfWindow``) with:

- ``count`` (executions and LM calls of the key), ``lm_calls``, ``errors``,
  ``errors_by_type`` (``"unknown"`` when an error names no type), ``error_rate``;
- latency ``p50/p90/p95/p99`` (ms) of their ``duration_ms``, from a log-bucket sketch
  with relative error < 1 % (``adaptd.streams.processors.history.sketch``), and the sketch itself
  (mergeable: add counts per index) with ``latency_n``;
- ``tokens_in``, ``tokens_out``, ``cost_usd``;
- ``cache_hits``, ``cache_known`` (LM calls that said hit or miss), ``cache_hit_rate``;
- ``quality_n``, ``quality_mean``: numeric feedback ``score`` s.

Each event counts in the key made of its own fields (an LM call has no module, so its
key has ``module`` null).  **Feedback** is joined to its execution by ``execution_id``
and counts in that execution's key, in the window of *the feedback's own time*: a score
that arrives an hour after the run lands in the current window (and is never late just
because the run's window closed).  Feedback whose execution is unknown (never seen, seen
only later in the log, or more than ``join_events`` source events earlier) is counted in
``feedback_unmatched`` and not attributed.

**Tenants.**  Every join and dedupe is per tenant: feedback joins only an execution of
its own tenant, and an id re-sent by one tenant is a re-send only of that tenant's
event, whatever ids other tenants use.

**Bounded keys.**  A tenant holds at most ``max_keys_per_tenant`` keys.  An event whose key
is new to a tenant at its cap evicts that tenant's least recently seen key (by last event
time, ties by key text) if it has been idle ``key_idle_s`` (at least the largest window,
so its windows have all closed) at the event's watermark; otherwise the event is refused
(``keys_refused``).  Feedback on an execution of an evicted key joins nothing.  Every
decision is taken per event in log order, so replay and any batching agree, and no
tenant's flood can evict or refuse another tenant's keys.

Late events (their window had closed when they arrived) are counted per window size and
left out of that window; an event late for a small window may still count in a larger
one.  Re-sent events (same ``id`` within ``dedupe_events`` source events) are counted
once.  Sums of cost and scores are kept exactly, in units of 1e-9, so the figures do not
depend on batch boundaries (float addition would).

Throughput comes from doing everything per batch with numpy: keys and open windows are
found with ``searchsorted`` over sorted codes (Python runs per *new* key or window only),
events are grouped into panes ``(key, smallest window, lateness level)`` once, and each
window size sums panes.  Emitting a window costs Python work (one dict per window), so a
stream with few events per key and window is bound by its output.

The state (``history_state``) is keyed: every figure of a window depends on that key's
events and the watermark only, so the stream can be partitioned by key.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptd.streams.events import SCHEMA_VERSION
from adaptd.streams.processors.base import EXECUTION, FEEDBACK, LM_CALL, EventBatch, iso_us
from adaptd.streams.processors.history.sketch import ALPHA, MIN_VALUE, NB, OFFSET, buckets, quantiles
from adaptd.streams.processors.history.state import (
    ERROR_TYPES,
    F_COST,
    F_COUNT,
    F_ERR,
    F_HITS,
    F_KNOWN,
    F_LATN,
    F_LM,
    F_QN,
    F_QSUM,
    F_TOKENS_IN,
    F_TOKENS_OUT,
    GONE,
    LATE_PROGRAMS,
    NF,
    OTHER_PROGRAMS,
    HistoryState,
    Key,
    KeyBudget,
    RecentIds,
    WindowTable,
    grow,
    key_of,
)
from adaptd.streams.processors.windows import check_nested, late_levels, parse_size

#: Namespace of window event ids (see ``window_id``).
HISTORY_NS = uuid.UUID("3c9f6f0e-4a55-4d4f-b0f7-2a1f4f3c6d21")
DEFAULT_WINDOWS: tuple[str, ...] = ("10s", "1m", "1h")
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
SOURCE = "adaptd.history"

_FIXED = 1e9
#: Scores are clipped to +-this before the exact sum (keeps int64 sums from overflowing).
MAX_SCORE = 1e6
_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_WID_BIAS = 1 << 39


class HistoryProcessor:
    """Per-key performance windows.  Pure: see ``adaptd.streams.processors.base``."""

    kinds = frozenset({"execution", "lm_call", "feedback"})

    def __init__(self, windows: Sequence[str] = DEFAULT_WINDOWS, *, dedupe_events: int = 100_000,
                 join_events: int = 500_000, max_keys_per_tenant: int = 10_000, key_idle_s: float | None = None,
                 name: str = "history") -> None:
        """Args:
            windows: window sizes, ascending, each dividing the next (``"10s"``, ``"1m"``...).
            dedupe_events: an event whose id occurred (in the same tenant) within this many
                earlier source events is a re-send and counted once (bounds the id memory).
            join_events: feedback joins its execution only if the execution came at
                most this many source events earlier (bounds the join memory).
            max_keys_per_tenant: most keys a tenant holds (see the module docstring).
            key_idle_s: event-time seconds without events after which a key may be
                evicted for a new one; None: the largest window.
            name: processor name (in ids and stats).

        Raises:
            ValueError: bad window sizes, non-positive bounds, or ``key_idle_s`` shorter
                than the largest window.
        """
        self.windows = tuple(windows)
        self.sizes_us = [parse_size(w) for w in self.windows]
        check_nested(self.sizes_us)
        if dedupe_events < 1 or join_events < 1 or max_keys_per_tenant < 1:
            raise ValueError("dedupe_events, join_events and max_keys_per_tenant must be >= 1")
        self.key_idle_us = self.sizes_us[-1] if key_idle_s is None else int(round(key_idle_s * 1_000_000))
        if self.key_idle_us < self.sizes_us[-1]:
            raise ValueError("key_idle_s must be at least the largest window (an evicted key's windows must be closed)")
        self.dedupe_events, self.join_events, self.name = dedupe_events, join_events, name
        self.max_keys = max_keys_per_tenant

    def config(self) -> dict[str, Any]:
        return {"version": 3, "windows": list(self.windows), "alpha": ALPHA,
                "dedupe_events": self.dedupe_events, "join_events": self.join_events,
                "max_keys_per_tenant": self.max_keys, "key_idle_us": self.key_idle_us}

    def initial_state(self) -> HistoryState:
        return HistoryState(tables=[WindowTable(n, s) for n, s in zip(self.windows, self.sizes_us)],
                            budget=KeyBudget(self.max_keys, self.key_idle_us))

    def metrics(self, state: HistoryState) -> dict[str, Any]:
        return {
            "events": state.seq,
            "keys": len(state.keys),
            **state.budget.metrics(),
            "late": {t.name: t.late for t in state.tables},
            # the programs with the most late events (those stored but left out of closed windows)
            "late_by_program": {f"{tenant}/{program}": n for (tenant, program), n in sorted(
                state.late_by_program.items(), key=lambda item: (-item[1], item[0]))[:50]},
            "open_windows": {t.name: t.open_windows() for t in state.tables},
            "windows_emitted": {t.name: t.emitted for t in state.tables},
            "duplicates": state.duplicates,
            "feedback_unmatched": state.feedback_unmatched,
        }

    # ------------------------------------------------------------------ processing

    def process(self, state: HistoryState, batch: EventBatch, watermark: int) -> tuple[HistoryState, list[dict]]:
        """Fold ``batch`` (log order, ``wm`` set) into ``state``; emit windows ending <= ``watermark``.

        Returns:
            ``(state, windows)``: ``state`` updated in place; the closed windows as
            ``window`` event dicts ordered by window end, size, then key (as text).
            An empty batch only closes windows.
        """
        if len(batch):
            self._fold(state, batch)
        closed: list[tuple[Any, dict]] = []
        for level, table in enumerate(state.tables):
            closed += self._close(state, level, table, watermark)
        closed.sort(key=lambda item: item[0])
        state.keys.collect()  # evicted keys' windows are closed and emitted: free their codes
        return state, [event for _, event in closed]

    def _fold(self, state: HistoryState, batch: EventBatch) -> None:
        kind = batch.kind
        wanted = (kind == EXECUTION) | (kind == LM_CALL) | (kind == FEEDBACK)
        if not wanted.all():
            batch = batch.take(wanted)
            kind = batch.kind
        n = len(batch)
        if n == 0:
            return
        s0 = state.seq
        state.seq += n
        seq = np.arange(s0, s0 + n, dtype=np.int64)
        groups = _tenant_rows(batch)
        keep = np.ones(n, bool)
        for tenant, rows in groups:
            recent = state.recent.get(tenant)
            if recent is None:
                recent = state.recent[tenant] = RecentIds()
            ids = batch.id if len(rows) == n else [batch.id[i] for i in rows.tolist()]
            keep[rows] = self._dedupe(state, recent, ids, seq[rows])
        key = np.full(n, -1, np.int64)
        cats = (batch.tenant, batch.program, batch.module, batch.route, batch.model)
        own = np.flatnonzero(keep & (kind != FEEDBACK))
        if len(own):
            key[own] = state.keys.lookup(cats, own)
        pressed = self._admit_new(state, batch, cats, own[key[own] < 0], seq, key)
        for tenant, rows in groups:
            if tenant in pressed:
                self._exact(state, batch, tenant, rows[keep[rows]], seq, key, cats)
            else:
                self._fast(state, batch, tenant, rows[keep[rows]], seq, key)
        for ids_of in (state.recent, state.exec_key):
            horizon = self.dedupe_events if ids_of is state.recent else self.join_events
            for recent in ids_of.values():
                recent.turn_over(state.seq, horizon)
        rows = np.flatnonzero(key >= 0)
        if len(rows):
            self._aggregate(state, batch, rows, key[rows])

    # ------------------------------------------------------------------ keys and joins

    def _admit_new(self, state: HistoryState, batch: EventBatch, cats: tuple, absent: np.ndarray, seq: np.ndarray,
                   key: np.ndarray) -> set[str]:
        """Add the new keys of tenants with room for all of them (``key`` of their rows is
        set); return the tenants without that room (their rows go through ``_exact``)."""
        if not len(absent):
            return set()
        row_keys = [key_of(cats, i) for i in absent.tolist()]
        first: dict[Key, int] = {}
        for i, k in zip(absent.tolist(), row_keys):
            first.setdefault(k, i)
        new: dict[str, int] = {}
        for k in first:
            new[k[0]] = new.get(k[0], 0) + 1
        pressed = {t for t, count in new.items() if not state.budget.room(t, count)}
        codes: dict[Key, int] = {}
        for k, i in first.items():
            if k[0] not in pressed:
                codes[k] = self._add_key(state, k, int(seq[i]), int(batch.ts[i]))
        for i, k in zip(absent.tolist(), row_keys):
            code = codes.get(k)
            if code is not None:
                key[i] = code
        return pressed

    def _add_key(self, state: HistoryState, k: Key, seq: int, ts: int) -> int:
        code = state.keys.add(k)
        state.last = grow(state.last, code + 1, 0)
        state.born = grow(state.born, code + 1, GONE)
        state.last[code], state.born[code] = ts, seq
        state.budget.added(k[0] or "default", code, state.keys.texts[code], ts, seq)
        return code

    def _exec_ids(self, state: HistoryState, tenant: str) -> RecentIds:
        recent = state.exec_key.get(tenant)
        if recent is None:
            recent = state.exec_key[tenant] = RecentIds()
        return recent

    def _fast(self, state: HistoryState, batch: EventBatch, tenant: str, rows: np.ndarray, seq: np.ndarray,
              key: np.ndarray) -> None:
        """A tenant with room for its new keys: no eviction, so joins and last-seen times
        can be done for the whole batch at once."""
        if not len(rows):
            return
        kind = batch.kind[rows]
        exec_ids = self._exec_ids(state, tenant)
        execs = rows[kind == EXECUTION]
        if len(execs):
            packed = (key[execs] << _SEQ_BITS) | seq[execs]
            ids = batch.id
            exec_ids.current.update(zip([ids[i] for i in execs.tolist()], packed.tolist()))
        feedback = rows[kind == FEEDBACK]
        if len(feedback):
            self._join(state, exec_ids, batch, feedback, seq, key)
        seen = rows[key[rows] >= 0]
        np.maximum.at(state.last, key[seen], batch.ts[seen])

    def _exact(self, state: HistoryState, batch: EventBatch, tenant: str, rows: np.ndarray, seq: np.ndarray,
               key: np.ndarray, cats: tuple) -> None:
        """A tenant at its cap: admit, evict or refuse event by event, in log order."""
        budget, keys = state.budget, state.keys
        exec_ids = self._exec_ids(state, tenant)
        current, previous = exec_ids.current, exec_ids.previous
        kinds, ts, wm, seqs = batch.kind[rows].tolist(), batch.ts[rows].tolist(), batch.wm[rows].tolist(), seq[rows].tolist()
        for j, i in enumerate(rows.tolist()):
            t, s = ts[j], seqs[j]
            if kinds[j] == FEEDBACK:
                parent = batch.execution_id[i]
                found = -1 if parent is None else current.get(parent, previous.get(parent, -1))
                exec_seq, code = found & _SEQ_MASK, found >> _SEQ_BITS
                if found >= 0 and exec_seq < s and s - exec_seq <= self.join_events and state.born[code] <= exec_seq:
                    key[i] = code
                    state.last[code] = max(int(state.last[code]), t)
                else:
                    state.feedback_unmatched += 1
                continue
            code = int(key[i])
            if code >= 0 and state.born[code] >= GONE:  # evicted earlier in this batch
                code = -1
            if code < 0:
                k = key_of(cats, i)
                found_code = keys.index.get(k)
                if found_code is None:
                    if not budget.room(tenant):
                        victim = budget.victim(tenant, wm[j], state.last, state.born)
                        if victim is None:
                            budget.refuse(tenant)
                            key[i] = -1
                            continue
                        keys.remove(victim)
                        state.born[victim] = GONE
                        budget.removed(tenant)
                    found_code = self._add_key(state, k, s, t)
                code = found_code
            else:
                state.last[code] = max(int(state.last[code]), t)
            key[i] = code
            if kinds[j] == EXECUTION:
                current[batch.id[i]] = (code << _SEQ_BITS) | s

    def _dedupe(self, state: HistoryState, recent: RecentIds, ids: list[str], seqs: np.ndarray) -> np.ndarray:
        """True for events to keep: not a re-send of an id the tenant sent within ``dedupe_events``."""
        n = len(ids)
        current = recent.current
        keep = np.ones(n, bool)
        horizon = self.dedupe_events
        order = seqs.tolist()
        if current.keys().isdisjoint(ids) and recent.previous.keys().isdisjoint(ids):  # the usual case, in C
            before = len(current)
            current.update(zip(ids, order))  # each id's last occurrence, as below
            if len(current) - before == n:
                return keep
            last: dict[str, int] = {}  # an id repeated inside the batch
            for i, event_id in enumerate(ids):
                j = last.get(event_id)
                if j is not None and order[i] - order[j] <= horizon:
                    keep[i] = False
                last[event_id] = i
        else:
            for i, event_id in enumerate(ids):
                prev = recent.get(event_id)
                if prev >= 0 and order[i] - prev <= horizon:
                    keep[i] = False
                current[event_id] = order[i]
        state.duplicates += int(n - keep.sum())
        return keep

    def _join(self, state: HistoryState, exec_ids: RecentIds, batch: EventBatch, rows: np.ndarray, seq: np.ndarray,
              key: np.ndarray) -> None:
        parents = [batch.execution_id[i] for i in rows.tolist()]
        get, older = exec_ids.current.get, exec_ids.previous.get
        found = np.array([get(p, -1) if p is not None else -1 for p in parents], np.int64)
        for j in np.flatnonzero(found < 0).tolist():  # not in the current generation: the previous one
            if parents[j] is not None:
                found[j] = older(parents[j], -1)
        exec_seq = found & _SEQ_MASK
        ok = (found >= 0) & (exec_seq < seq[rows]) & (seq[rows] - exec_seq <= self.join_events)
        # an execution of an evicted key (its code gone or reused since) joins nothing
        ok[ok] = state.born[found[ok] >> _SEQ_BITS] <= exec_seq[ok]
        key[rows[ok]] = found[ok] >> _SEQ_BITS
        state.feedback_unmatched += int(len(rows) - ok.sum())

    @staticmethod
    def _count_late(state: HistoryState, batch: EventBatch, rows: np.ndarray) -> None:
        """Count ``rows`` (late for the smallest window) per (tenant, program); pairs beyond
        ``LATE_PROGRAMS`` share ``OTHER_PROGRAMS`` (the first pairs seen keep their own)."""
        counts = state.late_by_program
        tenants, programs = batch.tenant.take(rows), batch.program.take(rows)
        for i in range(len(rows)):
            pair = (tenants.get(i) or "default", programs.get(i) or "")
            if pair not in counts and len(counts) >= LATE_PROGRAMS:
                pair = OTHER_PROGRAMS
            counts[pair] = counts.get(pair, 0) + 1

    def _aggregate(self, state: HistoryState, batch: EventBatch, rows: np.ndarray, key: np.ndarray) -> None:
        tables, sizes = state.tables, self.sizes_us
        ts, wm = batch.ts[rows], batch.wm[rows]
        level = late_levels(ts, wm, sizes)
        for i, table in enumerate(tables):
            table.late += int((level > i).sum())
        late = rows[level > 0]
        if len(late):
            self._count_late(state, batch, late)
        on = level < len(sizes)
        if not on.all():
            rows, key, ts, level = rows[on], key[on], ts[on], level[on]
            if not len(rows):
                return
        # Panes: (key, smallest window, lateness level).  Every window size sums panes.
        fine = ts // sizes[0]
        low = int(fine.min())
        span = int(fine.max()) - low + 1
        levels = len(sizes)
        rel = fine - low
        if (int(key.max()) + 1) * span * levels >= 1 << 62:  # absurd time spread: renumber
            uniq_fine, rel = np.unique(fine, return_inverse=True)
            span = len(uniq_fine)
        else:
            uniq_fine = None
        comp = (key * span + rel) * levels + level
        panes, pinv = np.unique(comp, return_inverse=True)
        pane_level = panes % levels
        rest = panes // levels
        pane_key = rest // span
        pane_fine = rest % span
        pane_fine = uniq_fine[pane_fine] if uniq_fine is not None else pane_fine + low
        matrix = self._pane_sums(batch, rows, pinv, len(panes))

        kind = batch.kind[rows]
        event = kind != FEEDBACK
        err_rows = np.flatnonzero(event & batch.status_error[rows])
        if len(err_rows):  # global error-type codes (0: none given), capped at ERROR_TYPES - 1 ("other")
            err_types = np.minimum(state.error_types.codes(batch.error_type.take(rows[err_rows])), ERROR_TYPES - 1)
        duration = batch.duration_ms[rows]
        lat = np.flatnonzero(event & ~np.isnan(duration))
        if len(lat):
            codes, counts = np.unique(pinv[lat] * NB + buckets(duration[lat]), return_counts=True)
            sk_pane, sk_bucket = codes // NB, codes % NB
        for i, table in enumerate(tables):
            eligible = np.flatnonzero(pane_level <= i)
            if not len(eligible):
                continue
            wid = pane_fine[eligible] // (sizes[i] // sizes[0])
            keys_e = pane_key[eligible]
            scomp = (keys_e << _SEQ_BITS) + (wid + _WID_BIAS)
            uniq, sinv = np.unique(scomp, return_inverse=True)
            first = np.empty(len(uniq), np.int64)
            first[sinv] = np.arange(len(eligible))
            slots = table.slots_for(uniq, keys_e[first], wid[first])
            slot_of_pane = np.full(len(panes), -1, np.int64)
            slot_of_pane[eligible] = slots[sinv]
            # Sum panes per slot exactly (int64): sort by slot, reduce each run of rows.
            order = np.argsort(sinv, kind="stable")
            bounds = np.searchsorted(sinv[order], np.arange(len(uniq)))
            table.agg[slots] += np.add.reduceat(matrix[eligible][order], bounds, axis=0)
            if len(err_rows):
                err_slot = slot_of_pane[pinv[err_rows]]
                ok = err_slot >= 0
                table.errors.add(err_slot[ok] * ERROR_TYPES + err_types[ok], np.ones(int(ok.sum()), np.int64))
            if len(lat):
                sk_slot = slot_of_pane[sk_pane]
                ok = sk_slot >= 0
                table.sketch.add(sk_slot[ok] * NB + sk_bucket[ok], counts[ok])

    @staticmethod
    def _pane_sums(batch: EventBatch, rows: np.ndarray, pinv: np.ndarray, panes: int) -> np.ndarray:
        kind = batch.kind[rows]
        event = kind != FEEDBACK
        lm = kind == LM_CALL
        cache = batch.cache_hit[rows]
        score = batch.score[rows]
        scored = (kind == FEEDBACK) & ~np.isnan(score)
        out = np.zeros((panes, NF), np.int64)

        def count(weights: np.ndarray) -> np.ndarray:
            # float sums of 0/1 or token counts are exact far beyond any batch
            return np.rint(np.bincount(pinv, weights=weights, minlength=panes)).astype(np.int64)

        out[:, F_COUNT] = count(event)
        out[:, F_LM] = count(lm)
        out[:, F_ERR] = count(event & batch.status_error[rows])
        out[:, F_TOKENS_IN] = count(np.nan_to_num(batch.tokens_in[rows]))
        out[:, F_TOKENS_OUT] = count(np.nan_to_num(batch.tokens_out[rows]))
        out[:, F_HITS] = count(lm & (cache == 1))
        out[:, F_KNOWN] = count(lm & (cache >= 0))
        out[:, F_QN] = count(scored)
        out[:, F_LATN] = count(event & ~np.isnan(batch.duration_ms[rows]))
        cost = np.rint(np.nan_to_num(batch.cost_usd[rows]) * _FIXED).astype(np.int64)
        np.add.at(out[:, F_COST], pinv, cost)
        quality = np.rint(np.clip(np.where(scored, score, 0.0), -MAX_SCORE, MAX_SCORE) * _FIXED).astype(np.int64)
        np.add.at(out[:, F_QSUM], pinv, quality)
        return out

    # ------------------------------------------------------------------ closing

    def _close(self, state: HistoryState, level: int, table: WindowTable, watermark: int) -> list[tuple[Any, dict]]:
        used = table.used
        if not len(table.open_comps):
            return []
        ends = (table.slot_wid[:used] + 1) * table.size_us
        closing = table.active[:used] & (ends <= watermark)
        if not closing.any():
            return []
        slots = np.flatnonzero(closing)
        codes, counts = table.sketch.take(closing)
        err_codes, err_counts = table.errors.take(closing)
        err_slot = err_codes // ERROR_TYPES
        err_lo = np.searchsorted(err_slot, slots, side="left").tolist()
        err_hi = np.searchsorted(err_slot, slots, side="right").tolist()
        names = state.error_types.values
        err_names = ["other" if t == ERROR_TYPES - 1 else names[t] or "unknown"
                     for t in (err_codes % ERROR_TYPES).tolist()]
        err_n = err_counts.tolist()
        qv = quantiles(slots, codes, counts, QUANTILES)
        entry_slot = codes // NB
        starts = np.searchsorted(entry_slot, slots, side="left").tolist()
        stops = np.searchsorted(entry_slot, slots, side="right").tolist()
        bucket_list = (codes % NB).tolist()
        index_list = (codes % NB - OFFSET).tolist()
        count_list = counts.tolist()
        agg = table.agg[slots]
        key_codes = table.slot_key[slots].tolist()
        wids = table.slot_wid[slots].tolist()
        size, name = table.size_us, table.name
        iso: dict[int, str] = {}
        out = []
        prefix = HISTORY_NS.bytes + self.name.encode() + b"\x1f"
        keys = state.keys.keys
        texts = state.keys.texts
        # Flat column lists (not a list per window): fewer objects for the garbage collector.
        # The unpacking below follows the F_* column order of history_state.
        columns = zip(key_codes, wids, *agg.T.tolist(), *qv.T.tolist(), starts, stops, err_lo, err_hi)
        for (key_code, wid, count, lm, errors, tokens_in, tokens_out, cost, hits, known, qn, qsum, latn,
             p50, p90, p95, p99, lo, hi, elo, ehi) in columns:
            key = keys[key_code]
            key_text = texts[key_code]
            start = wid * size
            start_iso = iso.get(start) or iso.setdefault(start, iso_us(start))
            end_iso = iso.get(start + size) or iso.setdefault(start + size, iso_us(start + size))
            zero = count_list[lo] if lo < hi and bucket_list[lo] == 0 else 0
            first = lo + (1 if zero else 0)
            has_latency = hi > lo
            event = {
                "id": _uuid5(prefix + f"{key_text}\x1f{name}\x1f{start_iso}".encode()),
                "ts": end_iso, "v": SCHEMA_VERSION, "kind": "window", "tenant": key[0], "source": SOURCE,
                "attrs": {}, "program": key[1], "module": key[2], "route": key[3], "model": key[4],
                "window_size": name, "window_start": start_iso, "window_end": end_iso,
                "count": count, "lm_calls": lm, "errors": errors,
                "errors_by_type": _by_type(err_names, err_n, elo, ehi) if ehi > elo else {},
                "error_rate": errors / count if count else None,
                "latency_n": latn,
                "p50_ms": p50 if has_latency else None, "p90_ms": p90 if has_latency else None,
                "p95_ms": p95 if has_latency else None, "p99_ms": p99 if has_latency else None,
                "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": cost / _FIXED,
                "cache_hits": hits, "cache_known": known, "cache_hit_rate": hits / known if known else None,
                "quality_n": qn, "quality_mean": qsum / qn / _FIXED if qn else None,
                "sketch": {"alpha": ALPHA, "min_value": MIN_VALUE, "zero": zero,
                           "index": index_list[first:hi], "count": count_list[first:hi]},
            }
            out.append(((start + size, level, key_text), event))
        table.release(slots)
        table.emitted += len(out)
        return out


def _tenant_rows(batch: EventBatch) -> list[tuple[str, np.ndarray]]:
    """The rows of each tenant in ``batch`` (tenant names as the events carry them)."""
    cat = batch.tenant
    codes = cat.codes
    if len(cat.values) == 1 and (codes >= 0).all():
        return [(cat.values[0], np.arange(len(codes)))]
    return [(cat.values[c] if c >= 0 else "default", np.flatnonzero(codes == c)) for c in np.unique(codes).tolist()]


def _by_type(names: list[str], counts: list[int], lo: int, hi: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, n in zip(names[lo:hi], counts[lo:hi]):
        out[name] = out.get(name, 0) + n  # "other" (capped codes) may repeat a name
    return dict(sorted(out.items()))


def window_id(name: str, key: Key, size: str, start_iso: str) -> str:
    """The id of a window event: ``derived_id(HISTORY_NS, name, *key, size, start_iso)``
    with a null key part written as a NUL character (so None and "" differ)."""
    text = "\x1f".join([name, *("\x00" if part is None else part for part in key), size, start_iso])
    return _uuid5(HISTORY_NS.bytes + text.encode())


def _uuid5(data: bytes) -> str:
    # uuid.uuid5 without building UUID objects (3x faster; one per emitted window).
    h = bytearray(hashlib.sha1(data).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"

