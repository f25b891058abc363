"""The history processor's state: keys, open windows, recent ids.  Plain data (pickled).

Everything is laid out for batch work: lookups are ``numpy.searchsorted`` over sorted
arrays, so Python runs once per *new* key or window, not once per event or per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaptd.streams.processors.base import Cat
from adaptd.streams.processors.sketch import SparseCounts

Key = tuple[str, str | None, str | None, str | None, str | None]
#: Aggregate columns of a window (int64; cost and quality sums in units of 1e-9).
(F_COUNT, F_LM, F_ERR, F_TOKENS_IN, F_TOKENS_OUT, F_COST, F_HITS, F_KNOWN, F_QN, F_QSUM, F_LATN) = range(11)
NF = 11
#: Error types counted per window (beyond this many distinct types they count as "other").
ERROR_TYPES = 1 << 16
_BITS = 12  # per key column in a key composite
_LIMIT = 1 << _BITS


def _empty(dtype: type = np.int64) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass(slots=True)
class Strings:
    """A growing dictionary ``str -> code`` (code 0 is None), shared by all batches."""

    values: list[str | None] = field(default_factory=lambda: [None])
    index: dict[str, int] = field(default_factory=dict)

    def codes(self, cat: Cat) -> np.ndarray:
        """``cat``'s global code per row (0 for null): Python per distinct value only."""
        index, values = self.index, self.values
        local = np.empty(len(cat.values) + 1, np.int64)
        for j, v in enumerate(cat.values):
            code = index.get(v)
            if code is None:
                code = index[v] = len(values)
                values.append(v)
            local[j] = code
        local[-1] = 0  # cat code -1 (null) reads the last entry
        return local[cat.codes]


@dataclass(slots=True)
class KeyTable:
    """Key tuple <-> key code; a key is found from its columns' global string codes."""

    columns: list[Strings] = field(default_factory=lambda: [Strings() for _ in range(5)])
    keys: list[Key] = field(default_factory=list)
    #: Per key code, the key as one string (null parts as NUL), for window ids and ordering.
    texts: list[str] = field(default_factory=list)
    index: dict[Key, int] = field(default_factory=dict)
    comps: np.ndarray = field(default_factory=_empty)  # sorted composites of column codes
    comp_codes: np.ndarray = field(default_factory=_empty)  # key code of each composite

    def codes(self, cats: tuple[Cat, ...], rows: np.ndarray) -> np.ndarray:
        """The key code of each row in ``rows`` (new keys are added)."""
        cols = [strings.codes(cat.take(rows)) for strings, cat in zip(self.columns, cats)]
        if max(int(c.max()) for c in cols) >= _LIMIT:  # too many distinct names to pack: slow path
            return np.array([self._code(tuple(s.values[c] for s, c in zip(self.columns, row)))
                             for row in zip(*(c.tolist() for c in cols))], np.int64)
        comp = cols[0]
        for c in cols[1:]:
            comp = (comp << _BITS) | c
        at = np.searchsorted(self.comps, comp)
        found = at < len(self.comps)
        found[found] = self.comps[at[found]] == comp[found]
        if not found.all():
            new = np.unique(comp[~found])
            codes = [self._code(self._unpack(c)) for c in new.tolist()]
            comps = np.concatenate([self.comps, new])
            order = np.argsort(comps, kind="stable")
            self.comps, self.comp_codes = comps[order], np.concatenate([self.comp_codes, codes])[order]
            at = np.searchsorted(self.comps, comp)
        return self.comp_codes[at]

    def _unpack(self, comp: int) -> Key:
        parts = []
        for strings in reversed(self.columns):
            parts.append(strings.values[comp & (_LIMIT - 1)])
            comp >>= _BITS
        return tuple(reversed(parts))  # type: ignore[return-value]

    def _code(self, key: Key) -> int:
        code = self.index.get(key)
        if code is None:
            code = self.index[key] = len(self.keys)
            self.keys.append(key)
            self.texts.append("\x1f".join(["\x00" if part is None else part for part in key]))
        return code


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

        def grow(a: np.ndarray) -> np.ndarray:
            out = np.zeros((cap, *a.shape[1:]), a.dtype)
            out[:n] = a
            return out

        self.slot_key, self.slot_wid = grow(self.slot_key), grow(self.slot_wid)
        self.active, self.agg = grow(self.active), grow(self.agg)

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
    #: Source events taken so far (their sequence numbers).
    seq: int = 0
    keys: KeyTable = field(default_factory=KeyTable)
    error_types: Strings = field(default_factory=Strings)
    recent: RecentIds = field(default_factory=RecentIds)  # event id -> seq of its last occurrence
    exec_key: RecentIds = field(default_factory=RecentIds)  # execution id -> key << 40 | seq
    duplicates: int = 0
    feedback_unmatched: int = 0
