"""Event-time windows and watermarks (pure functions over microsecond timestamps).

Tumbling windows of size ``s`` are ``[k*s, (k+1)*s)`` since the Unix epoch.  The
watermark says "no event older than this is expected any more": it is the highest event
time seen so far minus the allowed lateness.  A window closes (becomes final) once the
watermark reaches its end; an event arriving for a closed window is *late*.

Everything is decided per event in log order (the watermark right after each event), so
the outcome never depends on how the log is cut into batches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from adaptd.streams.processors.base import NO_WATERMARK

US = 1_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_SIZE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_size(text: str) -> int:
    """``"10s"`` / ``"1m"`` / ``"1h"`` / ``"1d"`` -> microseconds.

    Raises:
        ValueError: not a positive whole number followed by s, m, h or d.
    """
    match = _SIZE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window size {text!r} must look like 10s, 1m, 1h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2)] * US


def check_nested(sizes_us: Sequence[int]) -> None:
    """Check that each window size divides the next (ascending), which makes windows nest.

    Raises:
        ValueError: empty, not strictly ascending, or a size that does not divide the next.
    """
    if not sizes_us:
        raise ValueError("at least one window size is needed")
    for small, big in zip(sizes_us, sizes_us[1:]):
        if big <= small or big % small:
            raise ValueError(f"window sizes must ascend and each divide the next ({small // US}s, {big // US}s)")


def watermarks(ts_us: np.ndarray, append_ms: np.ndarray, high: int, lateness_us: int,
               max_future_us: int | None) -> tuple[np.ndarray, int]:
    """The watermark right after each event, and the new highest event time.

    Args:
        ts_us: event times in log order.
        append_ms: when the log appended each event (ms); an event time more than
            ``max_future_us`` ahead of it counts only as ``append + max_future`` for the
            watermark, so one client with a clock in the future cannot close everyone's
            windows early.  ``append_ms <= 0`` means unknown (no bound).
        high: the highest (bounded) event time before this batch (``NO_WATERMARK`` at first).
        lateness_us: how far behind the highest event time the watermark stays.
        max_future_us: the bound above; None for no bound.

    Returns:
        ``(wm, high)``: per event ``max(high, bounded ts so far) - lateness``, and the new
        highest time.  For no events: an empty array and ``high`` unchanged.
    """
    if len(ts_us) == 0:
        return np.zeros(0, np.int64), high
    bounded = ts_us
    if max_future_us is not None:
        known = append_ms > 0
        limit = np.where(known, append_ms * 1000 + max_future_us, np.iinfo(np.int64).max)
        bounded = np.minimum(ts_us, limit)
    running = np.maximum.accumulate(np.maximum(bounded, high))
    return running - lateness_us, int(running[-1])


def watermark_of(high: int, lateness_us: int) -> int:
    """The watermark for the highest event time ``high``."""
    return NO_WATERMARK if high <= NO_WATERMARK else high - lateness_us


def late_levels(ts_us: np.ndarray, wm: np.ndarray, sizes_us: Sequence[int]) -> np.ndarray:
    """For each event, for how many of ``sizes_us`` (ascending, nested) it is late.

    An event is late for size ``s`` when its window ``[k*s, (k+1)*s)`` ended at or before
    the watermark when it arrived.  Nested windows end no earlier than the windows they
    contain, so an event late for one size is late for every smaller size too: level
    ``L`` means late for the ``L`` smallest sizes and on time for the others.
    """
    level = np.zeros(len(ts_us), np.int8)
    for size in sizes_us:
        level += ((ts_us // size + 1) * size <= wm)
    return level
