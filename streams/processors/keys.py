"""Keys shared by the processor families: the (tenant, program, module, route, model)
tuple, the tables that code keys as small integers for batch work, and the per-tenant
budget that bounds how many keys a tenant holds.  Plain data (pickled inside processor
snapshots).

Codes are an implementation detail: no processor output depends on which code a key got
(outputs are ordered and identified by the key's text), so a table may reuse the codes
of removed keys.  A code removed during a batch is reused only after ``collect`` (the
processor calls it at the batch's end), so a batch never sees one code name two keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptd.streams.processors.base import Cat

Key = tuple[str, str | None, str | None, str | None, str | None]
_BITS = 12  # per key column in a key composite
_LIMIT = 1 << _BITS
#: ``born`` of a removed key code: later than any sequence number (joins to it fail).
GONE = 1 << 62


def _empty(dtype: type = np.int64) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass(slots=True)
class Strings:
    """A dictionary ``str -> code`` (code 0 is None), shared by all batches.

    ``counted`` tables (the key columns) count the live keys using each code and give
    unused codes back in ``collect``, so the table holds the strings of live keys only.
    Uncounted tables never free; with a ``limit`` they hold at most ``limit`` codes and
    map every later new value to code ``limit - 1`` (error types: "other").
    """

    values: list[str | None] = field(default_factory=lambda: [None])
    index: dict[str, int] = field(default_factory=dict)
    counted: bool = False
    limit: int | None = None
    refs: list[int] = field(default_factory=lambda: [0])
    free: list[int] = field(default_factory=list)
    #: Codes made since the last ``collect`` (freed then unless a key uses them).
    fresh: list[int] = field(default_factory=list)

    def codes(self, cat: Cat) -> np.ndarray:
        """``cat``'s global code per row (0 for null): Python per distinct value used."""
        local = np.zeros(len(cat.values) + 1, np.int64)  # cat code -1 (null) reads the last entry
        if len(cat.values):
            used = np.zeros(len(cat.values), bool)
            used[cat.codes[cat.codes >= 0]] = True
            values = cat.values
            for j in np.flatnonzero(used).tolist():
                local[j] = self.intern(values[j], count=False)
        return local[cat.codes]

    def intern(self, value: str | None, *, count: bool = True) -> int:
        """The code of ``value`` (made if new); ``count``: one more live key uses it."""
        if value is None:
            return 0
        code = self.index.get(value)
        if code is None:
            if self.limit is not None and len(self.values) >= self.limit:
                return self.limit - 1
            if self.free:
                code = self.free.pop()
                self.values[code] = value
                self.refs[code] = 0
            else:
                code = len(self.values)
                self.values.append(value)
                self.refs.append(0)
            self.index[value] = code
            if self.counted:
                self.fresh.append(code)
        if count and self.counted and code:
            self.refs[code] += 1
        return code

    def release(self, code: int) -> None:
        """One live key less uses ``code`` (freed by ``collect`` when none does)."""
        if self.counted and code:
            self.refs[code] -= 1
            if self.refs[code] <= 0:
                self.fresh.append(code)

    def collect(self) -> None:
        """Free the codes no live key uses any more (counted tables only)."""
        for code in self.fresh:
            value = self.values[code]
            if self.refs[code] <= 0 and value is not None and self.index.get(value) == code:
                del self.index[value]
                self.values[code] = None
                self.free.append(code)
        self.fresh = []

    def __len__(self) -> int:
        return len(self.index)


def _columns() -> list[Strings]:
    return [Strings(counted=True) for _ in range(5)]


@dataclass(slots=True)
class KeyTable:
    """Key tuple <-> key code; a key is found from its columns' global string codes.

    ``codes`` adds new keys as it meets them; ``lookup`` / ``add`` / ``remove`` /
    ``collect`` let a processor decide which new keys it admits (see ``KeyBudget``).
    """

    columns: list[Strings] = field(default_factory=_columns)
    keys: list[Key | None] = field(default_factory=list)
    #: Per key code, the key as one string (null parts as NUL), for window ids and ordering.
    texts: list[str] = field(default_factory=list)
    #: Per key code, its columns' string codes (None: free code).
    parts: list[tuple[int, ...] | None] = field(default_factory=list)
    index: dict[Key, int] = field(default_factory=dict)
    comps: np.ndarray = field(default_factory=_empty)  # sorted composites of column codes
    comp_codes: np.ndarray = field(default_factory=_empty)  # key code of each composite
    dirty: bool = False  # comps must be rebuilt before the next lookup
    free: list[int] = field(default_factory=list)
    #: Codes removed since the last ``collect`` (still readable, not yet reusable).
    retiring: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        """Live keys."""
        return len(self.index)

    def codes(self, cats: tuple[Cat, ...], rows: np.ndarray) -> np.ndarray:
        """The key code of each row in ``rows`` (new keys are added)."""
        codes = self.lookup(cats, rows)
        absent = np.flatnonzero(codes < 0)
        if len(absent):
            made: dict[Key, int] = {}
            picked = rows[absent].tolist()
            for j, i in zip(absent.tolist(), picked):
                key = key_of(cats, i)
                code = made.get(key)
                if code is None:
                    code = made[key] = self.add(key)
                codes[j] = code
        return codes

    def lookup(self, cats: tuple[Cat, ...], rows: np.ndarray) -> np.ndarray:
        """The key code of each row in ``rows``; -1 where the key is not in the table."""
        if not len(rows):
            return np.zeros(0, np.int64)
        cols = [strings.codes(cat.take(rows)) for strings, cat in zip(self.columns, cats)]
        if max(int(c.max()) for c in cols) >= _LIMIT:  # too many distinct names to pack: per distinct row
            uniq, inverse = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
            index, columns = self.index, self.columns
            found = np.array([index.get(tuple(s.values[c] for s, c in zip(columns, row)), -1)  # type: ignore[misc]
                              for row in uniq.tolist()], np.int64)
            return found[inverse.reshape(-1)]
        if self.dirty:
            self._rebuild()
        comp = _pack(cols)
        at = np.searchsorted(self.comps, comp)
        hit = at < len(self.comps)
        hit[hit] = self.comps[at[hit]] == comp[hit]
        out = np.full(len(comp), -1, np.int64)
        out[hit] = self.comp_codes[at[hit]]
        return out

    def _rebuild(self) -> None:
        parts = self.parts
        live = [(p, c) for c in self.index.values() if max(p := parts[c]) < _LIMIT]  # type: ignore[arg-type]
        if live:
            matrix = np.array([p for p, _ in live], np.int64)
            comp = _pack([matrix[:, j] for j in range(matrix.shape[1])])
            order = np.argsort(comp, kind="stable")
            self.comps, self.comp_codes = comp[order], np.array([c for _, c in live], np.int64)[order]
        else:
            self.comps, self.comp_codes = _empty(), _empty()
        self.dirty = False

    def add(self, key: Key) -> int:
        """Add ``key`` (not in the table) and return its code (a freed one if any)."""
        parts = tuple(s.intern(v) for s, v in zip(self.columns, key))
        text = "\x1f".join(["\x00" if part is None else part for part in key])
        if self.free:
            code = self.free.pop()
            self.keys[code], self.texts[code], self.parts[code] = key, text, parts
        else:
            code = len(self.keys)
            self.keys.append(key)
            self.texts.append(text)
            self.parts.append(parts)
        self.index[key] = code
        self.dirty = True
        return code

    def remove(self, code: int) -> None:
        """Take ``code``'s key out of the table; its code and text stay readable (for the
        windows closing in this batch) until ``collect``."""
        key = self.keys[code]
        if key is not None and self.index.get(key) == code:
            del self.index[key]
            self.retiring.append(code)
            self.dirty = True

    def collect(self) -> list[int]:
        """Free the codes removed since the last call (and strings no key uses); return them."""
        freed = self.retiring
        for code in freed:
            parts = self.parts[code]
            if parts is not None:
                for strings, c in zip(self.columns, parts):
                    strings.release(c)
            self.keys[code], self.texts[code], self.parts[code] = None, "", None
        self.free.extend(sorted(freed, reverse=True))
        self.retiring = []
        for strings in self.columns:
            strings.collect()
        return freed


def _pack(cols: Sequence[np.ndarray]) -> np.ndarray:
    comp = cols[0]
    for c in cols[1:]:
        comp = (comp << _BITS) | c
    return comp


def key_of(cats: tuple[Cat, ...], i: int) -> Key:
    """Row ``i``'s key from the key columns ``cats``."""
    return tuple(cat.get(i) for cat in cats)  # type: ignore[return-value]


@dataclass(slots=True)
class KeyBudget:
    """At most ``cap`` keys per tenant; a tenant's idle keys make room for its new ones.

    The processor asks ``victim`` when a tenant at its cap meets a new key at event time
    position ``wm`` (the watermark when that event arrived).  The victim is the tenant's
    key seen least recently in event time (ties: the smaller key text) if it has been idle
    for ``idle_us`` (its last event time + ``idle_us`` <= ``wm``) and the processor's
    ``evictable`` test allows it; otherwise there is no victim and the processor refuses
    the new key (``refused``).  Decisions depend only on one tenant's events in log order
    and their watermarks, so replay and any batching decide the same, and one tenant's
    flood never evicts or refuses another tenant's keys.

    Per tenant a heap of ``(last, text, code, born)``: one entry per live key, pushed when
    the key is added.  Last-seen times only grow, so an entry older than the key's current
    ``last`` is refreshed when it reaches the top, and an entry whose ``born`` differs from
    the code's current one belongs to a removed key and is dropped.
    """

    cap: int
    idle_us: int
    counts: dict[str, int] = field(default_factory=dict)
    heaps: dict[str, list] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    evicted: dict[str, int] = field(default_factory=dict)

    def room(self, tenant: str, new: int = 1) -> bool:
        """True when ``tenant`` can take ``new`` more keys without evicting any."""
        return self.counts.get(tenant, 0) + new <= self.cap

    def added(self, tenant: str, code: int, text: str, last: int, born: int) -> None:
        """Record a new key of ``tenant``."""
        self.counts[tenant] = self.counts.get(tenant, 0) + 1
        heapq.heappush(self.heaps.setdefault(tenant, []), (last, text, code, born))

    def removed(self, tenant: str) -> None:
        """Record that one of ``tenant``'s keys was evicted."""
        self.counts[tenant] -= 1
        self.evicted[tenant] = self.evicted.get(tenant, 0) + 1

    def refuse(self, tenant: str) -> None:
        """Count an event refused because ``tenant`` had no room for its key."""
        self.refused[tenant] = self.refused.get(tenant, 0) + 1

    def idle(self, tenant: str, wm: int, last: Sequence[int] | np.ndarray, born: Sequence[int] | np.ndarray) -> bool:
        """True when ``tenant``'s least recently seen key is idle at ``wm`` (a victim may exist)."""
        heap = self.heaps.get(tenant)
        while heap:
            t, text, code, b = heap[0]
            if int(born[code]) != b:
                heapq.heappop(heap)
                continue
            now = int(last[code])
            if now != t:
                heapq.heapreplace(heap, (now, text, code, b))
                continue
            return t + self.idle_us <= wm
        return False

    def victim(self, tenant: str, wm: int, last: Sequence[int] | np.ndarray, born: Sequence[int] | np.ndarray,
               evictable: Callable[[int], bool] | None = None, *, skip_at_most: int = 64) -> int | None:
        """The code of ``tenant``'s key to evict for a new one at watermark ``wm``, or None.

        ``last[code]`` / ``born[code]`` are the processor's current last-seen event time
        and incarnation of each code.  Keys ``evictable`` refuses (an open incident...) are
        passed over, at most ``skip_at_most`` of them.  The victim's entry leaves the heap;
        the caller removes the key and calls ``removed``.
        """
        heap = self.heaps.get(tenant)
        if not heap:
            return None
        skipped: list = []
        found = None
        while heap and len(skipped) < skip_at_most:
            t, text, code, b = heap[0]
            if int(born[code]) != b:  # a removed key's entry
                heapq.heappop(heap)
                continue
            now = int(last[code])
            if now != t:  # seen since the entry was pushed
                heapq.heapreplace(heap, (now, text, code, b))
                continue
            if t + self.idle_us > wm:  # the least recently seen key is not idle: none is
                break
            if evictable is not None and not evictable(code):
                skipped.append(heapq.heappop(heap))
                continue
            heapq.heappop(heap)
            found = code
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found

    def metrics(self) -> dict[str, object]:
        """``keys_per_tenant_cap``, ``keys_evicted`` and ``keys_refused`` per tenant (JSON-ready)."""
        return {"keys_per_tenant_cap": self.cap, "keys_evicted": dict(sorted(self.evicted.items())),
                "keys_refused": dict(sorted(self.refused.items()))}


def grow(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    """``a`` with room for at least ``n`` entries (new ones set to ``fill``)."""
    if n <= len(a):
        return a
    out = np.full(max(n, 2 * len(a), 64), fill, a.dtype)
    out[:len(a)] = a
    return out
