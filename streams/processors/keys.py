"""Keys shared by the processor families: the (tenant, program, module, route, model)
tuple, and the tables that code keys as small integers for batch work.  Plain data
(pickled inside processor snapshots).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaptd.streams.processors.base import Cat

Key = tuple[str, str | None, str | None, str | None, str | None]
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
