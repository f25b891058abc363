"""DriftDetector: flags each controlled shift within 2 windows, stays silent without one,
bounds its memory and restores from JSON state to continue identically.

Small, fast versions of bench/drift_bench.py: 200 executions per window, a reference of 3
windows, executions described exactly as the SDK does (``adaptd.streams.features``)."""

from __future__ import annotations

import json
import math
import random

import pytest

from adaptd.streams.features import features as describe
from adaptd.streams.processors.drift.detector import OTHER, DriftConfig, DriftDetector, execution_features

WINDOW = 200
CONFIG = DriftConfig(reference_windows=3, seed=7)
COMMON = "the a my your please help with is it this that for on and to of can you how".split()
TOPICS = [
    "refund invoice charge billing payment card credit subscription plan price discount receipt".split(),
    "shipping delivery package tracking courier parcel address delayed arrived warehouse dispatch".split(),
    "password login account email verify reset locked username security code profile settings".split(),
    "error crash bug install update version app screen freeze slow battery sync download".split(),
]
BASE = {"mix": (0.5, 0.3, 0.2, 0.0), "latency": 800.0, "quality": 0.8}


def execution(rnd: random.Random, p: dict) -> dict:
    """The features of one execution event; text length does not depend on the topic."""
    topic = rnd.choices(range(len(TOPICS)), weights=p["mix"])[0]
    n = rnd.randint(*p.get("words", (8, 30)))
    text = " ".join(rnd.choice(TOPICS[topic]) if rnd.random() < 0.6 else rnd.choice(COMMON) for _ in range(n))
    route = "fast" if rnd.random() < 0.7 else "strong"
    event = {
        "kind": "execution", "program": "qa", "route": route, "model": f"m-{route}",
        "status": "error" if rnd.random() < 0.01 else "ok",
        "duration_ms": p["latency"] * math.exp(rnd.gauss(0, 0.6)),
        "tokens_in": 40 + n + rnd.randint(0, 20), "tokens_out": max(1, int(rnd.gauss(120, 30))),
        "inputs": {"question": describe(text)},
    }
    quality = sum(rnd.random() < p["quality"] for _ in range(4)) / 4  # graded judge score
    return execution_features(event, quality=quality)


def feed(det: DriftDetector, rnd: random.Random, windows: int, **change) -> list[list]:
    """Feed ``windows`` windows (``change`` overrides BASE); the findings of each."""
    p = {**BASE, **change}
    out = []
    for _ in range(windows):
        for _ in range(WINDOW):
            det.observe(execution(rnd, p))
        out.append(det.close_window(window_end=det.windows_closed + 1))
    return out


def warmed(seed: int, config: DriftConfig = CONFIG) -> tuple[DriftDetector, random.Random]:
    det, rnd = DriftDetector(config), random.Random(seed)
    assert feed(det, rnd, config.reference_windows) == [[]] * config.reference_windows
    assert det.reference_ready
    return det, rnd


def flagged(findings: list) -> set[str]:
    return {f.feature for f in findings}


def test_no_shift_stream_raises_no_finding_in_20_windows():
    det, rnd = warmed(seed=1)
    assert feed(det, rnd, 20) == [[]] * 20


def test_latency_median_up_50_percent_is_flagged_within_2_windows_with_its_evidence():
    det, rnd = warmed(seed=2)
    first = feed(det, rnd, 1, latency=1200.0)[0]
    assert flagged(first) == {"duration_ms"}
    (f,) = first
    assert f.test == "ks" and f.kind == "numeric" and f.window_index == 4 and f.window_end == 4
    assert f.p_value <= f.threshold and f.effect >= f.min_effect == CONFIG.numeric_min_effect
    assert f.details["cur_median"] > 1.3 * f.details["ref_median"]
    assert f.details["psi"] > 0.1 and f.details["wasserstein"] > 200
    assert f.top == [{"feature": "duration_ms", "test": "ks", "effect": f.effect, "p_value": f.p_value}]
    json.dumps(f.to_dict())  # a finding travels as JSON (the signal's explanation)


@pytest.mark.parametrize("text_test", ["mmd", "classifier"])
def test_topic_mix_change_is_flagged_within_2_windows_by_the_text_sketch(text_test):
    det, rnd = warmed(seed=3, config=DriftConfig(reference_windows=3, seed=7, text_test=text_test))
    windows = feed(det, rnd, 2, mix=(0.1, 0.2, 0.3, 0.4))
    assert "inputs.question.text" in flagged(windows[0]) | flagged(windows[1])
    f = next(f for w in windows for f in w if f.feature == "inputs.question.text")
    assert f.kind == "text" and f.effect >= CONFIG.text_min_auc  # the domain classifier's AUC
    assert f.test == {"mmd": "mmd", "classifier": "domain_auc"}[text_test]
    # Lengths do not depend on the topic: only the sketch may tell.
    assert flagged(windows[0]) | flagged(windows[1]) == {"inputs.question.text"}


@pytest.mark.parametrize("text_test", ["mmd", "classifier"])
def test_pure_length_growth_is_a_length_drift_and_never_a_content_drift(text_test):
    """The same topics in questions twice as long: ``.len`` drifts; ``.text`` (whose
    sketches get denser with length) is tested with length held fixed and stays quiet."""
    det, rnd = warmed(seed=5, config=DriftConfig(reference_windows=3, seed=7, text_test=text_test))
    windows = feed(det, rnd, 8, words=(16, 60))
    assert all("inputs.question.len" in flagged(w) for w in windows)
    assert not any("inputs.question.text" in flagged(w) for w in windows)


def test_a_content_change_at_the_same_length_is_still_a_content_drift():
    det, rnd = warmed(seed=6)
    windows = feed(det, rnd, 2, mix=(0.0, 0.0, 0.2, 0.8), words=(16, 60))
    assert {"inputs.question.len", "inputs.question.text"} <= flagged(windows[0]) | flagged(windows[1])


def test_quality_drop_of_10_points_is_flagged_within_2_windows():
    det, rnd = warmed(seed=4)
    windows = feed(det, rnd, 2, quality=0.7)
    found = [f for w in windows for f in w if f.feature == "quality"]
    assert found, windows
    f = found[0]
    assert f.test == "welch_t" and f.details["baseline"] == "reference"
    assert f.effect == pytest.approx(f.details["ref_mean"] - f.details["cur_mean"]) and f.effect > 0.05


def test_quality_against_a_pinned_golden_baseline_is_tested_while_the_reference_forms():
    det, rnd = DriftDetector(CONFIG), random.Random(5)
    det.pin_quality_baseline([1.0] * 80 + [0.5] * 20)  # golden set mean 0.9
    (first,) = feed(det, rnd, 1)  # production quality ~0.8: 10 points under the golden set
    assert not det.reference_ready
    assert flagged(first) == {"quality"}
    assert first[0].details["baseline"] == "golden" and first[0].details["ref_mean"] == pytest.approx(0.9)


def test_huge_windows_do_not_flag_trivial_shifts():
    # 20,000 values per side: a 2-point quality drop and a 2-point route share change are
    # highly significant, yet below the minimum effects (5 points, JS distance 0.1).
    det = DriftDetector(DriftConfig(reference_windows=1))
    rnd = random.Random(6)
    for ready, (q, fast) in enumerate([(0.80, 0.70), (0.78, 0.68)]):
        for _ in range(20_000):
            det.observe({"quality": float(rnd.random() < q), "route": "fast" if rnd.random() < fast else "strong"})
        assert det.close_window() == []
        assert det.reference_ready
    assert det.config.alpha < 1e-3


def test_threshold_is_the_bonferroni_share_of_alpha():
    det = DriftDetector(DriftConfig(reference_windows=1, alpha=1e-3, quality_share=0.5, quality_windows=1))
    rnd = random.Random(8)
    for shift in (0.0, 5.0):
        for _ in range(300):
            det.observe({"a": rnd.gauss(shift, 1), "b": rnd.gauss(0, 1), "c": "x", "quality": rnd.random()})
        findings = det.close_window()
    (f,) = findings
    # Three feature tests share half of alpha, one quality look has the other half.
    assert f.feature == "a" and f.threshold == pytest.approx(1e-3 * 0.5 / 3)


def test_pinned_reference_is_used_without_warm_up_and_rebaseline_accepts_a_new_normal():
    rnd = random.Random(9)
    det = DriftDetector(CONFIG)
    det.pin_reference(execution(rnd, BASE) for _ in range(600))
    assert det.reference_ready
    assert flagged(feed(det, rnd, 1, latency=1600.0)[0]) == {"duration_ms"}
    det.rebaseline()  # the slower model is the new normal
    assert not det.reference_ready
    assert feed(det, rnd, CONFIG.reference_windows + 5, latency=1600.0) == [[]] * (CONFIG.reference_windows + 5)


def test_state_round_trips_through_json_and_continues_identically():
    det, rnd = warmed(seed=10)
    feed(det, rnd, 1, latency=1200.0)
    for _ in range(50):  # mid-window
        det.observe(execution(rnd, BASE))
    restored = DriftDetector.from_state(json.loads(json.dumps(det.to_state())))
    assert restored.to_state() == det.to_state()
    rnd_a, rnd_b = random.Random(11), random.Random(11)
    out_a = feed(det, rnd_a, 2, mix=(0.1, 0.2, 0.3, 0.4))
    out_b = feed(restored, rnd_b, 2, mix=(0.1, 0.2, 0.3, 0.4))
    assert [[f.to_dict() for f in w] for w in out_a] == [[f.to_dict() for f in w] for w in out_b]
    assert any(out_a)
    assert json.dumps(restored.to_state(), sort_keys=True) == json.dumps(det.to_state(), sort_keys=True)


def test_same_inputs_and_seed_give_the_same_state_and_another_seed_another_sample():
    states = []
    for seed in (1, 1, 2):
        det = DriftDetector(DriftConfig(seed=seed, reference_size=50))
        rnd = random.Random(12)
        for _ in range(500):
            det.observe({"x": rnd.random()})
        states.append(det.to_state()["features"]["x"])
    assert states[0] == states[1] and states[0] != states[2]


def test_memory_is_bounded_and_what_is_dropped_is_counted():
    cfg = DriftConfig(reference_size=100, text_reference_size=20, max_features=4, max_categories=3)
    det = DriftDetector(cfg)
    for i in range(2000):
        det.observe({"x": float(i), "cat": f"c{i % 10}", "hv": [i % 100 - 50, 1], "k": ["a", "b"], "extra": 1.0})
    state = det.to_state()
    feats = state["features"]
    assert len(feats["x"]["res"][0]["data"]) == 100 and feats["x"]["res"][0]["seen"] == 2000
    assert len(feats["hv"]["res"][0]["data"]) == 20 * 2
    assert set(feats["cat"]["counts"][0]) == {"c0", "c1", "c2", OTHER}
    assert feats["k"]["counts"][0] == {"a,b": 2000}
    assert "extra" not in feats and state["dropped_features"] == 2000
    # The reservoir is a uniform sample of all values, not the first 100.
    assert max(feats["x"]["res"][0]["data"]) > 1000


def test_bad_values_are_counted_never_raised():
    det = DriftDetector()
    det.observe({"x": 1.0, "hv": [1, 2, 3], "route": "a", "quality": 0.5})
    bad = [{"x": "fast"}, {"x": math.nan}, {"x": True}, {"hv": [1, 2]}, {"hv": [1, 2, 300]}, {"hv": [1, "a", 2]},
           {"route": 3}, {"route": ["a", 2]}, {"quality": "good"}, {"quality": math.inf}, {"new": {"a": 1}},
           {"new2": []}, {"new3": math.inf}]
    for row in bad:
        det.observe(row)
    assert det.invalid_values == len(bad)
    det.observe({"x": None, "route": None})  # missing values are not errors
    assert det.invalid_values == len(bad)


def test_from_state_rejects_an_unknown_version_and_config_rejects_nonsense():
    with pytest.raises(ValueError, match="version"):
        DriftDetector.from_state({"v": 99})
    for bad in ({"alpha": 0}, {"text_test": "magic"}, {"reference_windows": 0}):
        with pytest.raises(ValueError):
            DriftConfig(**bad)


def test_execution_features_flattens_an_event_and_describes_raw_inputs():
    event = {"kind": "execution", "program": "qa", "duration_ms": 12.5, "tokens_in": 10, "route": "r1",
             "status": "ok", "model": None,
             "inputs": {"question": describe("where is my parcel"), "context": {"k": 1}, "raw": "hello world"}}
    out = execution_features(event, quality=0.5)
    assert out["duration_ms"] == 12.5 and out["tokens_in"] == 10 and out["route"] == "r1" and out["status"] == "ok"
    assert "model" not in out and "cost_usd" not in out
    assert out["inputs.question.len"] == 18 and out["inputs.question.type"] == "str"
    assert len(out["inputs.question.text"]) == 32
    assert out["inputs.context.keys"] == ["k"] and out["inputs.context.type"] == "dict"
    assert out["inputs.raw.len"] == 11 and "inputs.raw.text" in out  # raw content, described here
    assert out["quality"] == 0.5
    assert execution_features({"kind": "execution", "inputs": None}) == {}


HOUR_US = 3_600_000_000


def feed_hours(det: DriftDetector, rnd: random.Random, first: int, hours: int, per_hour: int = 600,
               slower: float = 1.0) -> list[list]:
    """Hourly windows ``first .. first + hours - 1`` (hours since midnight of day 0) whose
    latency follows a daily cycle of +-15 % (times ``slower``); the findings of each."""
    out = []
    for h in range(first, first + hours):
        p = {**BASE, "latency": 800.0 * (1 + 0.15 * math.sin(2 * math.pi * h / 24)) * slower}
        for _ in range(per_hour):
            det.observe(execution(rnd, p))
        out.append(det.close_window(window_end=(h + 1) * HOUR_US, window_start=h * HOUR_US))
    return out


def test_a_daily_latency_cycle_alarms_a_frozen_reference_but_not_a_reference_by_hour_of_day():
    frozen = DriftDetector(DriftConfig(reference_windows=3, seed=7))
    rnd = random.Random(11)
    found = []
    for h in range(48):
        p = {**BASE, "latency": 800.0 * (1 + 0.15 * math.sin(2 * math.pi * h / 24))}
        for _ in range(600):
            frozen.observe(execution(rnd, p))
        found += [f.feature for f in frozen.close_window(window_end=h + 1)]
    assert "duration_ms" in found  # the cycle itself reads as drift against the first 3 hours

    rolling = DriftDetector(DriftConfig(reference_windows=3, seed=7, reference="2d"))
    rnd = random.Random(11)
    quiet = feed_hours(rolling, rnd, 0, 72)
    assert quiet == [[]] * 72
    assert rolling.last_window is not None and rolling.last_window["state"] == "tested"
    shifted = feed_hours(rolling, rnd, 72, 2, slower=1.3)
    assert "duration_ms" in flagged(shifted[0]) | flagged(shifted[1])


def test_the_rolling_reference_forgets_what_is_older_than_its_span():
    det = DriftDetector(DriftConfig(reference_windows=1, seed=7, reference="1d", season_spread=0))
    rnd = random.Random(5)
    feed_hours(det, rnd, 0, 30, per_hour=60)
    slots = det._features["duration_ms"].slots.slots
    assert sorted(slots) == list(range(5, 30))  # this hour today and the 24 hours before
    with pytest.raises(ValueError, match="window_start and window_end"):
        det.close_window(window_end=1)


def test_a_rolling_reference_round_trips_through_json_and_continues_identically():
    det = DriftDetector(DriftConfig(reference_windows=2, seed=7, reference="1d"))
    rnd = random.Random(9)
    feed_hours(det, rnd, 0, 5, per_hour=300)
    restored = DriftDetector.from_state(json.loads(json.dumps(det.to_state())))
    assert restored.to_state() == det.to_state()
    a = feed_hours(det, random.Random(1), 5, 3, per_hour=300, slower=2.0)
    b = feed_hours(restored, random.Random(1), 5, 3, per_hour=300, slower=2.0)
    assert [[f.to_dict() for f in w] for w in a] == [[f.to_dict() for f in w] for w in b]
    assert any(a)


@pytest.mark.parametrize("bad", [{"reference": "7x"}, {"reference": "1h"}, {"season_buckets": 7},
                                 {"season_spread": 12}])
def test_bad_rolling_reference_settings_are_refused_with_the_reason(bad):
    with pytest.raises(ValueError):
        DriftConfig(**{"reference": "7d", **bad})
