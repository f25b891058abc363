"""A drift window that cannot be tested says so, with the reason, in ``/v1/stats``.

A real daemon gets a program at 30 executions an hour: its 5-minute drift windows extend
to the hour cap (``max_window_periods``) and close with 30 executions, below what any
test needs (``min_samples`` = 50).  Nothing drifts and nothing is signalled, and the
daemon's counters say that the program's windows were *not tested*, and why.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
from conftest import ev, post_events, wait_until

from adaptd.streams.features import features

PER_HOUR = 30


def test_a_low_traffic_program_is_reported_not_tested_with_the_reason(daemon_factory, tmp_path: Path) -> None:
    config = tmp_path / "adaptd.toml"
    config.write_text("[processors]\nlateness_s = 1\ndrift_reference_windows = 1\n")
    daemon = daemon_factory("quiet", config=config).start()
    rnd = random.Random(3)
    words = "refund invoice shipping parcel password login error crash the a my".split()
    events = [ev("execution", i * 3600 / PER_HOUR, program="quiet-qa", duration_ms=rnd.lognormvariate(6.5, 0.5),
                 inputs={"question": features(" ".join(rnd.choice(words) for _ in range(12)))})
              for i in range(4 * PER_HOUR)]
    post_events(daemon.url, events)

    def drift_figures() -> dict | None:
        stats = httpx.get(f"{daemon.url}/v1/stats", timeout=10).json()
        drift = stats["processors"]["processors"]["drift"]
        return drift if drift["windows_closed"] >= 3 else None

    drift = wait_until(drift_figures, timeout=30)
    assert drift["signals"] == 0
    assert drift["windows_not_tested"] == drift["windows_closed"]  # the first formed the reference
    listed = drift["not_tested"]["listed"]
    assert drift["not_tested"]["programs"] == 1 and drift["not_tested"]["reasons"] == {"too_few_executions": 1}
    (row,) = listed
    assert row["program"] == "quiet-qa" and row["state"] == "not_tested" and row["reason"] == "too_few_executions"
    assert row["executions"] == PER_HOUR and "min_samples" in row["detail"]
    # the window ran to the one-hour cap before it closed untested
    assert row["window_start"][:13] < row["window_end"][:13]
