"""The streaming detector on real-world-shaped series: it never raises and every score
lies in [0, 1], whatever the timestamps and values.

Series are built from hypothesis-drawn recipes: segments (constant, noise, level and
scale steps, values over many orders of magnitude, spikes) joined end to end, with
time steps that repeat, step back, or jump over gaps, and values replaced by NaN,
None or +-inf here and there.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptd.streams.processors.anomaly.detectors import Detector, DetectorConfig

#: A small config reaches every part of the detector (burst, tail-run, daily profile,
#: exact-sum refresh) within a few hundred points.
SMALL = DetectorConfig(history=60, min_count=5, burst_window=10, burst_history=40,
                       run_window=6, run_history=50, hold=5)

segment = st.tuples(
    st.sampled_from(["constant", "noise", "walk", "spikes", "zeros", "ramp"]),
    st.integers(1, 400),                                  # length
    st.sampled_from([0.0, 1.0, -5.0, 1e-9, 3e3, 1e12, -1e15, 1e300]),  # level
    st.sampled_from([0.0, 1e-12, 1.0, 50.0, 1e9, 1e150]),  # scale
)
time_step = st.sampled_from([300.0, 300.0, 300.0, 60.0, 0.0, -300.0, -86400.0, 1e6, 3.3])
bad_value = st.sampled_from([math.nan, math.inf, -math.inf, None])


def build(segments, steps, bad, seed):
    """(times, values) of a series made of ``segments`` with the drawn quirks."""
    rng = np.random.default_rng(seed)
    xs: list = []
    for kind, n, level, scale in segments:
        if kind == "constant":
            part = np.full(n, level)
        elif kind == "noise":
            part = level + scale * rng.standard_normal(n)
        elif kind == "walk":
            part = level + scale * np.cumsum(rng.standard_normal(n))
        elif kind == "spikes":
            part = np.where(rng.random(n) < 0.05, level + scale * 10, level)
        elif kind == "zeros":
            part = np.zeros(n)
        else:
            part = level + scale * np.linspace(0.0, 1.0, n)
        xs.extend(float(v) for v in part)
    times, t = [], 1.6e9
    for i in range(len(xs)):
        t += steps[i % len(steps)]
        times.append(t)
    for pos, v in bad:
        if xs:
            xs[pos % len(xs)] = v
    return times, xs


recipe = st.tuples(
    st.lists(segment, min_size=1, max_size=8),
    st.lists(time_step, min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 10_000), bad_value), max_size=10),
    st.integers(0, 2**32 - 1),
)


def check_scores(det: Detector, times, xs) -> list[float]:
    scores = [det.update(t, x) for t, x in zip(times, xs)]
    assert len(scores) == len(xs)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores), \
        [s for s in scores if not 0.0 <= s <= 1.0][:5]
    return scores


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe)
def test_any_series_is_scored_to_the_end_within_the_unit_interval(r):
    times, xs = build(*r)
    check_scores(Detector(SMALL), times, xs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe)
def test_the_default_detector_never_raises_and_stays_in_the_unit_interval(r):
    times, xs = build(*r)
    check_scores(Detector(), times, xs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe, st.integers(1, 400))
def test_quirky_series_snapshot_and_restore_bit_identically(r, cut):
    times, xs = build(*r)
    cut = min(cut, len(xs))
    whole = check_scores(Detector(SMALL), times, xs)
    det = Detector(SMALL)
    head = [det.update(t, x) for t, x in zip(times[:cut], xs[:cut])]
    # JSON cannot hold inf/nan: the state must not contain any
    restored = Detector.from_state(json.loads(json.dumps(det.to_state(), allow_nan=False)))
    tail = [restored.update(t, x) for t, x in zip(times[cut:], xs[cut:])]
    assert head + tail == whole


def test_a_series_whose_timestamps_step_back_once_is_scored_to_the_end():
    rng = np.random.default_rng(5)
    x = 100.0 + 5.0 * rng.standard_normal(3000)
    t = [1.6e9 + 300.0 * i for i in range(3000)]
    t[2000:] = [v - 3600.0 for v in t[2000:]]           # clock steps back one hour
    x[2600] += 80.0                                      # and an anomaly after it
    det = Detector()
    scores = check_scores(det, t, [float(v) for v in x])
    # the 11 points timed before the last one seen before the step are counted
    assert det.backwards == sum(t[i] < max(t[:i]) for i in range(2000, 2020)) == 11
    assert scores[2600] >= 0.9                           # still detecting after the step
    assert max(scores[500:2600]) < 0.75


def test_missing_values_score_zero_are_counted_and_leave_the_state_alone():
    det = Detector()
    for i in range(50):
        det.update(60.0 * i, 10.0 + (i % 3))
    before = det.to_state()
    for bad in (math.nan, math.inf, -math.inf, None):
        assert det.update(60.0 * 50, bad) == 0.0
    after = det.to_state()
    assert after.pop("missing") == before.pop("missing") + 4
    assert after == before


def test_replaying_a_quirky_series_gives_the_same_scores():
    times, xs = build([("spikes", 900, 1e6, 1e3), ("constant", 300, 0.0, 0.0),
                       ("noise", 900, -1e12, 1e9)], [300.0, 0.0, -60.0, 1e5],
                      [(17, None), (500, math.nan), (1500, math.inf)], 11)
    assert check_scores(Detector(), times, xs) == check_scores(Detector(), times, xs)


def test_the_nab_detector_command_scores_a_file_whose_clock_steps_back(tmp_path):
    rows = [(f"2015-03-01 {h:02d}:{m:02d}:00", str(10 + (h * m) % 7))
            for h in range(24) for m in range(0, 60, 5)]
    rows[100] = (rows[40][0], rows[100][1])             # one timestamp steps back
    rows[150] = (rows[150][0], "")                      # and one value is missing
    path = tmp_path / "series.csv"
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "bench" / "nab_detector.py"), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    scores = [float(s) for s in proc.stdout.split()]
    assert len(scores) == len(rows) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[150] == 0.0
