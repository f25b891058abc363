"""A vectorised, mergeable log-bucket quantile sketch (DDSketch's mapping, numpy speed).

A positive value ``x`` falls in bucket ``i = ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``; the bucket's representative ``2 gamma^i / (gamma + 1)``
is within ``alpha`` (relative) of every value in ``(gamma^(i-1), gamma^i]``.  A quantile is
read as the representative of the bucket holding the rank-``floor(q (n - 1))`` value (the
one ``numpy.quantile(..., method="lower")`` returns), so it is within ``alpha`` of it.
Sketches with the same ``alpha`` merge by adding counts per bucket, exactly.

``ALPHA = 0.0099`` keeps the guarantee under 1 % with room for floating-point rounding at
bucket edges.  Values below ``MIN_VALUE`` (1 ns, in milliseconds) count in the zero
bucket and read as 0; values above ``MAX_VALUE`` (~11.6 days) read as ``MAX_VALUE``.

``SparseCounts`` keeps many sketches at once as sorted ``(slot, bucket) -> count`` codes
in numpy arrays (a slot is one window of one key), so adding a batch is a few array
operations whatever the number of keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.0099
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE = 1e-6
MAX_VALUE = 1e9
#: Buckets per slot in a code (``code = slot * NB + bucket``); bucket 0 is the zero bucket.
NB = 2048
#: Bucket ``b`` (1..NB-1) holds index ``i = b - OFFSET``.
OFFSET = -math.ceil(math.log(MIN_VALUE) / _LOG_GAMMA) + 1
_TOP = min(NB - 1, math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA) + OFFSET)
assert _TOP < NB and OFFSET > 0


def buckets(values: np.ndarray) -> np.ndarray:
    """The bucket (0..NB-1) of each value (non-negative floats, no NaN)."""
    with np.errstate(divide="ignore"):
        idx = np.ceil(np.log(np.maximum(values, MIN_VALUE)) / _LOG_GAMMA).astype(np.int64) + OFFSET
    idx = np.clip(idx, 1, _TOP)
    idx[values < MIN_VALUE] = 0
    return idx


def bucket_values(bucket: np.ndarray) -> np.ndarray:
    """The representative value of each bucket (0.0 for the zero bucket)."""
    b = np.asarray(bucket, np.int64)
    out = 2.0 * np.power(GAMMA, (b - OFFSET).astype(np.float64)) / (GAMMA + 1.0)
    return np.where(b == 0, 0.0, out)


def quantiles(slots: np.ndarray, codes: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles ``qs`` of the sketches of ``slots``, from their sorted entries.

    Args:
        slots: the slots wanted (ascending, unique).
        codes, counts: every entry of those slots and no other, sorted by code.

    Returns:
        Array ``[len(slots), len(qs)]``; NaN for a slot with no entries.
    """
    out = np.full((len(slots), len(qs)), np.nan)
    if len(codes) == 0:
        return out
    entry_slot = codes // NB
    cum = np.cumsum(counts)
    first = np.searchsorted(entry_slot, slots, side="left")
    last = np.searchsorted(entry_slot, slots, side="right")
    has = last > first
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0)
    total = np.where(has, cum[np.maximum(last - 1, 0)] - before, 0)
    for j, q in enumerate(qs):
        rank = np.floor(q * np.maximum(total - 1, 0)).astype(np.int64)
        at = np.searchsorted(cum, before + rank, side="right")
        at = np.minimum(at, len(codes) - 1)
        out[has, j] = bucket_values(codes[at[has]] % NB)
    return out


@dataclass(slots=True)
class SparseCounts:
    """Counts per ``code = slot * width + item`` for many slots, in numpy arrays.

    For sketches the items are buckets (``width = NB``); the history processor also
    counts error types per window this way.  New counts are appended to a pending list
    and folded into the sorted arrays when the pending part outgrows them (amortised
    O(log n) per entry).  Plain data: pickles.
    """

    width: int = NB
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending_codes: list[np.ndarray] = field(default_factory=list)
    pending_counts: list[np.ndarray] = field(default_factory=list)
    pending: int = 0

    def add(self, codes: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` to ``codes`` (same length; codes may repeat)."""
        if len(codes) == 0:
            return
        self.pending_codes.append(codes.astype(np.int64, copy=False))
        self.pending_counts.append(counts.astype(np.int64, copy=False))
        self.pending += len(codes)
        if self.pending > max(len(self.codes), 1 << 16):
            self.compact()

    def compact(self) -> None:
        """Fold the pending counts into the sorted arrays."""
        if not self.pending:
            return
        codes = np.concatenate([self.codes, *self.pending_codes])
        counts = np.concatenate([self.counts, *self.pending_counts])
        self.codes, inverse = np.unique(codes, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts, minlength=len(self.codes)).astype(np.int64)
        self.pending_codes, self.pending_counts, self.pending = [], [], 0

    def take(self, closing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return the entries of the slots flagged in ``closing`` (bool per slot).

        Returns:
            ``(codes, counts)`` sorted by code; empty arrays when none.
        """
        self.compact()
        if len(self.codes) == 0:
            return self.codes, self.counts
        slot = self.codes // self.width
        mask = np.zeros(len(slot), bool)
        inside = slot < len(closing)
        mask[inside] = closing[slot[inside]]
        taken = self.codes[mask], self.counts[mask]
        if mask.any():
            self.codes, self.counts = self.codes[~mask], self.counts[~mask]
        return taken

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return self.codes.nbytes + self.counts.nbytes + sum(a.nbytes for a in self.pending_codes) * 2
