"""A drift reference set in event time that follows a cycle (pure geometry and storage).

With ``DriftConfig.reference = "7d"`` the reference is not the program's first windows,
frozen, but the last 7 days, seen by *bucket of the cycle*: the cycle (``season``, 1 day
by default) is cut into ``season_buckets`` buckets (24: hours of the day), and a window
is compared with what the same hour of the day (and ``season_spread`` hours on each side)
held on the previous days and earlier today.  A latency that is 15 % higher every
afternoon, or a route mix that differs at night, is then the reference of the afternoon
and of the night, not a drift.  Weekly cycles: ``season = "7d"``, ``season_buckets =
168`` (hours of the week), ``reference = "28d"``.

Buckets are numbered in absolute event time (``bucket = t // bucket_size``), so the
neighbours of 23:00 are 22:00 the same day and 00:00 the next, and the same bucket on
earlier cycles is ``bucket - k * season_buckets``.  A window belongs to the bucket of its
midpoint.  Storage per feature is one small sample per (bucket, cycle) ``slot``, kept
for the reference span; its size is the feature's reference size divided by the slots a
window's reference pools, so a window is compared with about ``reference_size`` values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from adaptd.streams.processors.drift.sample import Reservoir, mix
from adaptd.streams.processors.windows import parse_size


class Season(NamedTuple):
    """The cycle a rolling reference follows, in microseconds of event time."""

    bucket_us: int  # one bucket (season / season_buckets)
    buckets: int  # buckets per cycle
    cycles: int  # cycles the reference spans (reference / season)
    spread: int  # neighbour buckets pooled on each side

    @property
    def pooled(self) -> int:
        """Slots one window's reference pools (at most)."""
        return self.cycles * (2 * self.spread + 1)


def parse_season(reference: str, season: str, buckets: int, spread: int) -> Season | None:
    """The ``Season`` of a detector's settings; None for ``reference = ""`` (frozen first windows).

    Raises:
        ValueError: a size that is not like ``7d``, a season not a whole number of
            buckets (in microseconds), a reference shorter than one season, a negative
            spread or one that pools a bucket with itself across the cycle.
    """
    if not reference:
        return None
    span, cycle = parse_size(reference), parse_size(season)
    if buckets < 1 or cycle % buckets:
        raise ValueError(f"season {season!r} must split into season_buckets={buckets} equal buckets")
    if span < cycle:
        raise ValueError(f"reference {reference!r} must span at least one season ({season!r})")
    if spread < 0 or 2 * spread + 1 > buckets:
        raise ValueError(f"season_spread={spread} must be >= 0 and pool fewer than season_buckets={buckets} buckets")
    return Season(cycle // buckets, buckets, span // cycle, spread)


def slot_of(season: Season, start_us: int, end_us: int) -> int:
    """The absolute bucket of a window ``[start, end)``: the bucket of its midpoint."""
    return (start_us + end_us) // 2 // season.bucket_us


def reference_slots(season: Season, slot: int) -> list[int]:
    """The slots a window in ``slot`` is compared with: its bucket and ``spread`` neighbours
    on each side, in each of the ``cycles`` cycles before and earlier in this one (newest
    first).  Those not yet filled are simply absent."""
    return [slot + k - j * season.buckets for j in range(season.cycles + 1)
            for k in range(-season.spread, season.spread + 1)]


def oldest_kept(season: Season, slot: int) -> int:
    """The oldest slot a window in ``slot`` or later may still use: older slots can go."""
    return slot - season.cycles * season.buckets - season.spread


def slice_cap(season: Season, reference_size: int) -> int:
    """Values kept per slot so that a window's pooled reference holds ~``reference_size``."""
    return max(8, math.ceil(reference_size / season.pooled))


def _slot_key(base: int, slot: int) -> int:
    return mix(base ^ mix(slot & ((1 << 64) - 1)) ^ (3 << 62)) >> 11  # 53 bits: exact in any JSON reader


class FeatureSlots:
    """One feature's reference samples per slot (see the module docstring).

    ``kind`` is the detector's: ``numeric`` slots hold a ``Reservoir`` of values, ``text``
    slots a reservoir of sketches and one of their lengths (aligned: same key), and
    ``categorical`` slots category counts.  Deterministic: a slot's reservoir key comes
    from the feature's ``base`` and the slot number.
    """

    def __init__(self, kind: str, width: int, base: int) -> None:
        self.kind, self.width, self.base = kind, width, base
        self.slots: dict[int, Any] = {}

    def fold(self, slot: int, cap: int, current: Any, max_categories: int, other: str) -> None:
        """Add a window's ``current`` sample (a ``Reservoir``; for text a pair of
        reservoirs, sketches and lengths; category counts) to ``slot``'s, at most ``cap``
        values (``max_categories`` categories, the rest counted as ``other``)."""
        if self.kind == "categorical":
            counts = self.slots.setdefault(slot, {})
            for value, n in current.items():
                if value not in counts and len(counts) >= max_categories:
                    value = other
                counts[value] = counts.get(value, 0) + n
            return
        key = _slot_key(self.base, slot)
        if self.kind == "numeric":
            res = self.slots.get(slot)
            if res is None:
                res = self.slots[slot] = Reservoir(cap, 1, key, "d")
            for v in current.data:
                res.add(v)
            return
        pair = self.slots.get(slot)
        if pair is None:
            pair = self.slots[slot] = (Reservoir(cap, self.width, key, "b"), Reservoir(cap, 1, key, "d"))
        rows, lens = current
        w = self.width
        for i in range(len(lens.data)):
            pair[0].add(rows.data[i * w:(i + 1) * w])
            pair[1].add(lens.data[i])

    def gather(self, slots: list[int]) -> tuple[int, Any]:
        """``(values seen, sample)`` pooled over ``slots`` (missing ones skipped): an array
        of values, a pair ``(sketches (n, width), lengths (n,))``, or merged counts."""
        present = [self.slots[s] for s in slots if s in self.slots]
        if self.kind == "categorical":
            merged: dict[str, int] = {}
            for counts in present:
                for value, n in counts.items():
                    merged[value] = merged.get(value, 0) + n
            return sum(merged.values()), merged
        if self.kind == "numeric":
            values = [r.values() for r in present]
            return sum(r.seen for r in present), np.concatenate(values) if values else np.empty(0)
        rows = [p[0].values() for p in present]
        lens = [p[1].values() for p in present]
        seen = sum(p[0].seen for p in present)
        if not rows:
            return 0, (np.empty((0, self.width)), np.empty(0))
        return seen, (np.concatenate(rows), np.concatenate(lens))

    def prune(self, oldest: int) -> None:
        """Forget the slots before ``oldest``."""
        for s in [s for s in self.slots if s < oldest]:
            del self.slots[s]

    def clear(self) -> None:
        self.slots.clear()

    def state(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {str(s): dict(c) for s, c in self.slots.items()}
        if self.kind == "numeric":
            return {str(s): r.state() for s, r in self.slots.items()}
        return {str(s): [p[0].state(), p[1].state()] for s, p in self.slots.items()}

    def load(self, state: Mapping[str, Any]) -> None:
        for s, v in state.items():
            if self.kind == "categorical":
                self.slots[int(s)] = dict(v)
            elif self.kind == "numeric":
                self.slots[int(s)] = Reservoir.load(v, "d")
            else:
                self.slots[int(s)] = (Reservoir.load(v[0], "b"), Reservoir.load(v[1], "d"))
