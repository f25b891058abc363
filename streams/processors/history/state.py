"""The history processor's state: keys, open windows, recent ids.  Plain data (pickled).

Ids are remembered per tenant (``recent`` and ``exec_key`` map a tenant to its own
``RecentIds``): a re-send is recognised, and feedback joins its execution, only within
the tenant that sent both, so another tenant naming the same id changes nothing.

Everything is laid out for batch work: lookups are ``numpy.searchsorted`` over sorted
arrays, so Python runs once per *new* key or window, not once per event or per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaptd.streams.processors.history.sketch import SparseCounts
from adaptd.streams.processors.keys import (  # noqa: F401  (re-exported for the history processor)
    GONE,
    Key,
    KeyBudget,
    KeyTable,
    Strings,
    grow,
    key_of,
)

#: Aggregate columns of a window (int64; cost and quality sums in units of 1e-9).
(F_COUNT, F_LM, F_ERR, F_TOKENS_IN, F_TOKENS_OUT, F_COST, F_HITS, F_KNOWN, F_QN, F_QSUM, F_LATN) = range(11)
NF = 11
#: Error types counted per window (beyond this many distinct types they count as "other").
ERROR_TYPES = 1 << 16
#: Most (tenant, program) pairs whose late events are counted apart; the rest share one count.
LATE_PROGRAMS = 1000
OTHER_PROGRAMS = ("", "(other programs)")


def _empty(dtype: type = np.int64) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass(slots=True)
class WindowTable:
    """The open windows of one size: one row ("slot") per (key, window), arrays by slot."""

    name: str
    size_us: int
    open_comps: np.ndarray = field(default_factory=_empty)  # sorted (key << 40 | wid + bias) of open windows
    open_slots: np.ndarray = field(default_factory=_empty)
    slot_key: np.ndarray = field(default_factory=_empty)
    slot_wid: np.ndarray = field(default_factory=_empty)
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    agg: np.ndarray = field(default_factory=lambda: np.zeros((0, NF), np.int64))
    used: int = 0  # slots ever allocated (arrays may be longer)
    free: list[int] = field(default_factory=list)
    sketch: SparseCounts = field(default_factory=SparseCounts)
    errors: SparseCounts = field(default_factory=lambda: SparseCounts(width=ERROR_TYPES))
    late: int = 0
    emitted: int = 0

    def slots_for(self, comps: np.ndarray, keys: np.ndarray, wids: np.ndarray) -> np.ndarray:
        """The slot of each window (``comps`` unique), opening slots for new windows."""
        at = np.searchsorted(self.open_comps, comps)
        found = at < len(self.open_comps)
        found[found] = self.open_comps[at[found]] == comps[found]
        slots = np.empty(len(comps), np.int64)
        slots[found] = self.open_slots[at[found]]
        new = np.flatnonzero(~found)
        if len(new):
            fresh = self._allocate(len(new))
            slots[new] = fresh
            self.slot_key[fresh], self.slot_wid[fresh], self.active[fresh] = keys[new], wids[new], True
            merged = np.concatenate([self.open_comps, comps[new]])
            order = np.argsort(merged, kind="stable")
            self.open_comps, self.open_slots = merged[order], np.concatenate([self.open_slots, fresh])[order]
        return slots

    def _allocate(self, n: int) -> np.ndarray:
        reuse = self.free[len(self.free) - min(n, len(self.free)):]
        del self.free[len(self.free) - len(reuse):]
        extra = n - len(reuse)
        if self.used + extra > len(self.active):
            self._grow(max(64, 2 * len(self.active), self.used + extra))
        out = np.concatenate([np.array(reuse, np.int64), np.arange(self.used, self.used + extra, dtype=np.int64)])
        self.used += extra
        return out

    def _grow(self, cap: int) -> None:
        n = len(self.active)

        def widen(a: np.ndarray) -> np.ndarray:
            out = np.zeros((cap, *a.shape[1:]), a.dtype)
            out[:n] = a
            return out

        self.slot_key, self.slot_wid = widen(self.slot_key), widen(self.slot_wid)
        self.active, self.agg = widen(self.active), widen(self.agg)

    def release(self, slots: np.ndarray) -> None:
        """Forget the windows of ``slots`` (after they were emitted)."""
        self.active[slots] = False
        self.agg[slots] = 0
        keep = self.active[self.open_slots]
        self.open_comps, self.open_slots = self.open_comps[keep], self.open_slots[keep]
        self.free.extend(slots.tolist())

    def open_windows(self) -> int:
        return len(self.open_comps)


@dataclass(slots=True)
class RecentIds:
    """``id -> int`` for the ids of the last ``horizon`` (or more) source events.

    Two generations of dicts: once the current one spans ``horizon`` events it becomes
    the previous one and the old previous one is dropped whole (O(1), no scan).  Every
    entry that could still be within ``horizon`` of a future event is kept; callers
    check the exact distance themselves, so *when* a generation turns over never
    changes an outcome.
    """

    current: dict[str, int] = field(default_factory=dict)
    previous: dict[str, int] = field(default_factory=dict)
    since: int = 0  # seq at which ``current`` started

    def get(self, key: str, default: int = -1) -> int:
        value = self.current.get(key)
        return self.previous.get(key, default) if value is None else value

    def turn_over(self, seq: int, horizon: int) -> None:
        """Start a new generation if the current one spans ``horizon`` events."""
        if seq - self.since >= horizon:
            self.previous, self.current, self.since = self.current, {}, seq

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


@dataclass(slots=True)
class HistoryState:
    """Everything the history processor knows."""

    tables: list[WindowTable]
    budget: KeyBudget
    #: Source events taken so far (their sequence numbers).
    seq: int = 0
    keys: KeyTable = field(default_factory=KeyTable)
    error_types: Strings = field(default_factory=lambda: Strings(limit=ERROR_TYPES))
    #: tenant -> (event id -> seq of its last occurrence)
    recent: dict[str, RecentIds] = field(default_factory=dict)
    #: tenant -> (execution id -> key << 40 | seq)
    exec_key: dict[str, RecentIds] = field(default_factory=dict)
    #: Per key code: the last event time seen (µs) and the seq at which the key was added
    #: (``keys.GONE`` once removed): an execution older than its key's ``born`` belonged
    #: to an evicted key, so feedback on it joins nothing.
    last: np.ndarray = field(default_factory=_empty)
    born: np.ndarray = field(default_factory=_empty)
    duplicates: int = 0
    feedback_unmatched: int = 0
    #: (tenant, program) -> events late for the smallest window; at most ``LATE_PROGRAMS``
    #: pairs, later ones counted under ``OTHER_PROGRAMS`` (a flood of names stays bounded).
    late_by_program: dict[tuple[str, str], int] = field(default_factory=dict)
