"""The streaming anomaly detector: bounded, causal, resumable, and it finds what it should.

Series are synthetic and seeded; the NAB benchmark (bench/nab_bench.py) is the
quality check on real data.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaptd.streams.processors.anomaly.detector_evidence import BurstRate, OnsetGate, TailRun
from adaptd.streams.processors.anomaly.detector_parts import (
    SortedWindow,
    gaussian_surprise,
    poisson_surprise,
)
from adaptd.streams.processors.anomaly.detectors import Detector, DetectorConfig

MINUTE = 60.0
#: Scores at or above this are alerts in these tests; steady noise stays below it.
ALERT = 0.75


def noise(n: int, seed: int, mean: float = 100.0, sd: float = 5.0) -> np.ndarray:
    return mean + sd * np.random.default_rng(seed).standard_normal(n)


def run(values, step: float = MINUTE, det: Detector | None = None, start: int = 0):
    det = det or Detector()
    return [det.update((start + i) * step, float(v)) for i, v in enumerate(values)]


def daily_square_wave(days: int, seed: int, step: float = 300.0) -> np.ndarray:
    """Low (20) at night, high (80) from 06:00 to 18:00, noise sd 2: art_daily-like."""
    per_day = int(86400 / step)
    t = np.arange(days * per_day) * step
    hour = (t % 86400) / 3600
    base = np.where((hour >= 6) & (hour < 18), 80.0, 20.0)
    return base + 2.0 * np.random.default_rng(seed).standard_normal(len(t))


# --- bounds and causality ---------------------------------------------------------

@pytest.mark.parametrize("series", [
    noise(3000, 0),
    np.zeros(500),
    np.r_[np.zeros(400), [1e12], np.zeros(100), [-1e12]],
    np.where(np.random.default_rng(1).random(3000) < 0.02, 50.0, 0.0),
    np.cumsum(np.random.default_rng(2).standard_normal(3000)),
], ids=["noise", "constant", "huge-spikes", "zero-inflated", "random-walk"])
def test_scores_lie_in_the_unit_interval(series):
    scores = run(series)
    assert len(scores) == len(series)
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)


def test_scores_of_a_prefix_do_not_change_when_more_data_is_appended():
    x = np.r_[noise(2500, 3), noise(500, 4, mean=130.0)]
    x[1800] += 80
    full = run(x)
    for cut in (700, 1801, 2600):
        assert run(x[:cut]) == full[:cut]


def test_the_same_input_gives_the_same_scores_in_two_detectors():
    x = noise(1500, 5)
    assert run(x, det=Detector(seed=1)) == run(x, det=Detector(seed=2))


# --- what it detects and what it leaves alone -----------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_steady_noisy_series_stays_below_the_alert_level_after_warm_up(seed):
    scores = run(noise(8000, seed))
    assert max(scores[500:]) < ALERT


def test_rare_identical_spikes_in_a_zero_series_do_not_blind_the_detector():
    x = np.where(np.random.default_rng(3).random(4000) < 0.005, 5.0, 0.0)
    x[3500] = 400.0                     # far beyond anything seen
    scores = run(x)
    assert max(scores[1000:3500]) < 0.5
    assert scores[3500] >= 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_a_level_shift_scores_high_at_its_onset(seed):
    x = noise(4000, seed)
    x[3000:] += 40.0                    # 8 sigma up, sustained
    scores = run(x)
    assert max(scores[500:3000]) < ALERT
    assert max(scores[3000:3010]) >= 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_a_single_spike_scores_high(seed):
    x = noise(3000, seed)
    x[2500] += 60.0                     # 12 sigma
    scores = run(x)
    assert scores[2500] >= 0.9
    assert max(scores[500:2500]) < ALERT


def test_a_drop_scores_as_high_as_a_rise():
    x = noise(3000, 7)
    x[2500:] -= 40.0
    assert max(run(x)[2500:2510]) >= 0.9


def test_an_incident_alerts_once_not_for_as_long_as_it_lasts():
    x = noise(4000, 8)
    x[3000:3300] += 40.0                # a 300-point plateau
    scores = run(x)
    assert sum(s >= ALERT for s in scores[3000:3300]) <= 2


@pytest.mark.parametrize("seed", [1, 9])
def test_a_burst_of_spikes_is_found_although_each_spike_is_ordinary(seed):
    # Zero-inflated, like an error count: identical spikes, 1 in 100 points.
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(6000) < 0.01, 20.0, 0.0)
    x[5000:5060:3] = 20.0               # then one every 3 points
    scores = run(x)
    # Each ordinary spike stays below the detector's alert level (0.5); the burst
    # builds up evidence and crosses it once.
    assert max(scores[1000:5000]) < 0.5
    assert max(scores[5000:5060]) >= 0.5


def test_a_missing_day_in_a_daily_cycle_is_found_and_the_normal_ramps_are_not():
    x = daily_square_wave(10, seed=10)
    per_day = 288
    day8 = slice(8 * per_day, 9 * per_day)
    x[day8] = 20.0 + 2.0 * np.random.default_rng(11).standard_normal(per_day)
    scores = run(x, step=300.0)
    assert max(scores[3 * per_day:8 * per_day]) < ALERT
    assert max(scores[day8]) >= 0.9


# --- expected range ---------------------------------------------------------------------

def test_expected_range_brackets_typical_values():
    det = Detector()
    assert all(math.isnan(v) for v in det.expected())
    x = noise(3000, 12)
    run(x[:2000], det=det)
    low, high = det.expected()
    assert low < 100.0 < high
    inside = np.mean([(low <= v <= high) for v in x[2000:]])
    assert inside >= 0.97
    assert high - low < 60.0            # +-3 sigma is 30 wide; not unbounded


def test_expected_range_follows_the_daily_cycle():
    det = Detector()
    x = daily_square_wave(5, seed=13)
    for i, v in enumerate(x):
        det.update(i * 300.0, float(v))
        hour = (i * 300.0 % 86400) / 3600
        if i > 3 * 288 and hour in (3.0, 12.0):
            low, high = det.expected()
            typical = 20.0 if hour == 3.0 else 80.0
            assert low < typical < high and high - low < 30.0


# --- snapshot and restore -------------------------------------------------------------------

def _series_with_everything() -> tuple[np.ndarray, float]:
    x = daily_square_wave(8, seed=14)
    x[1500] += 100.0
    x[1900:1960:3] += 30.0
    return x, 300.0


@pytest.mark.parametrize("cut", [5, 30, 1500, 1501, 1930])
def test_snapshot_and_restore_continue_bit_identically(cut):
    x, step = _series_with_everything()
    reference = run(x, step=step)
    det = Detector()
    head = run(x[:cut], step=step, det=det)
    state = json.loads(json.dumps(det.to_state(), allow_nan=False))
    restored = Detector.from_state(state)
    assert restored.expected() == det.expected() or all(
        math.isnan(v) for v in restored.expected() + det.expected())
    tail = run(x[cut:], step=step, det=restored, start=cut)
    assert head + tail == reference
    assert restored.to_state() == json.loads(json.dumps(Detector.from_state(
        restored.to_state()).to_state()))


def test_restore_keeps_a_custom_config():
    cfg = DetectorConfig(history=500, hold=5, decay=0.999)
    det = Detector(cfg, seed=3)
    run(noise(600, 15), det=det)
    restored = Detector.from_state(json.loads(json.dumps(det.to_state())))
    assert restored.config == cfg and restored.seed == 3
    assert len(restored.values.window) == 500


def test_restore_rejects_an_unknown_state_version():
    state = Detector().to_state()
    state["v"] = 99
    with pytest.raises(ValueError, match="version"):
        Detector.from_state(state)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf, None, "n/a"])
def test_a_missing_value_scores_zero_and_changes_only_the_missing_count(x):
    det = Detector()
    run(noise(50, 16), det=det)
    before = det.to_state()
    assert det.update(1e9, x) == 0.0
    after = det.to_state()
    assert after.pop("missing") == before.pop("missing") + 1 == 1
    assert after == before


def test_event_time_going_backwards_is_counted_and_scored_in_arrival_order():
    det = Detector()
    det.update(100.0, 1.0)
    assert 0.0 <= det.update(99.0, 1.0) <= 1.0
    assert det.backwards == 1 and det.last_t == 100.0
    det.update(100.0, 2.0)              # equal times are not a step back
    det.update(math.nan, 2.0)           # nor is a missing time: taken as the last one
    assert det.backwards == 1 and det.last_t == 100.0


@pytest.mark.parametrize("bad", [dict(history=0), dict(run_q=1.0), dict(decay=0.0),
                                 dict(hold=-1), dict(alert_level=0.0)])
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValueError):
        DetectorConfig(**bad)


# --- parts ------------------------------------------------------------------------------------

def test_sorted_window_quantiles_match_numpy_over_a_sliding_window():
    rng = np.random.default_rng(17)
    w = SortedWindow(100)
    xs = rng.standard_normal(300)
    for i, v in enumerate(xs):
        w.push(float(v))
    last = xs[-100:]
    for q in (0.0, 0.02, 0.25, 0.5, 0.75, 0.98, 1.0):
        assert w.quantile(q) == pytest.approx(np.quantile(last, q), abs=1e-12)
    assert w.frac_ge(float(np.max(last))) == pytest.approx(0.01)


def test_surprises_are_monotone_and_zero_without_evidence():
    assert gaussian_surprise(0.0) == pytest.approx(0.0, abs=1e-12)
    assert gaussian_surprise(math.nan) == 0.0
    assert gaussian_surprise(2.0) < gaussian_surprise(5.0) < gaussian_surprise(50.0)
    assert gaussian_surprise(-4.0) == gaussian_surprise(4.0)
    assert poisson_surprise(0, 1.0) == 0.0
    assert poisson_surprise(2, 1.0) < poisson_surprise(8, 1.0) <= 300.0


def test_burst_rate_and_tail_run_restore_their_counters():
    b, t = BurstRate(5, 50, 10), TailRun(6, 0.2, 40, 10)
    rng = np.random.default_rng(18)
    for v in rng.standard_normal(120):
        b.update(abs(v) > 1.5)
        t.update(float(v))
    b2, t2 = BurstRate.from_state(b.to_state()), TailRun.from_state(t.to_state())
    for v in rng.standard_normal(60):
        assert b.update(abs(v) > 1.5) == b2.update(abs(v) > 1.5)
        assert t.update(float(v)) == t2.update(float(v))


def test_onset_gate_scores_the_excess_over_the_recent_maximum_and_then_holds():
    g = OnsetGate((1.0,), alert_level=1.0, hold=2)
    assert g.update([3.0]) == 3.0       # first evidence: all excess, opens the hold
    assert g.update([9.0]) == 0.0       # held
    assert g.update([9.5]) == 0.0       # held (and the reference is now 9.5)
    assert g.update([9.0]) == 0.0       # below the reference
    assert g.update([10.0]) == pytest.approx(0.5)


# --- generalization: quiet on what is ordinary for the series ---------------------------

def test_a_daily_cycle_whose_edges_move_by_one_sample_does_not_alert():
    # Square wave whose switch happens one sample early or late from day to day.
    rng = np.random.default_rng(21)
    per_day, days = 288, 10
    x = []
    for d in range(days):
        shift = int(rng.integers(-1, 2))
        hours = (np.arange(per_day) - shift) * 300.0 / 3600.0
        x.extend(np.where((hours >= 6) & (hours < 18), 80.0, 20.0) + rng.standard_normal(per_day))
    scores = run(x, step=300.0)
    assert max(scores[3 * per_day:]) < 0.5


def test_a_missing_day_is_still_found_with_the_tolerant_daily_band():
    x = daily_square_wave(10, seed=22)
    per_day = 288
    x[8 * per_day + 60:8 * per_day + 220] = 20.0   # the day shift never comes
    assert max(run(x, step=300.0)[8 * per_day + 60:8 * per_day + 230]) >= 0.9


def test_a_wandering_series_does_not_keep_alerting_on_its_own_long_runs():
    # A random walk sits in one tail for hundreds of points at a time; a run detector
    # calibrated only on independent values re-alerted every ~150 points.
    x = 100.0 + np.cumsum(np.random.default_rng(23).standard_normal(6000))
    scores = run(x, step=300.0, det=Detector(DetectorConfig(alert_level=0.5, hold=40)))
    assert sum(s >= 0.4 for s in scores[1000:]) <= 3      # it was 11


def test_tail_run_is_as_surprised_as_the_binomial_for_a_run_longer_than_any_before():
    rng = np.random.default_rng(24)
    calibrated = TailRun(24, 0.1, 1000)
    outs = [calibrated.update(float(v)) for v in rng.standard_normal(1500)]
    assert max(outs) < 8.0                          # independent noise: short runs
    plateau = [calibrated.update(10.0) for _ in range(24)]
    assert plateau[-1] >= 20.0                      # 24 of 24 in the top tail
