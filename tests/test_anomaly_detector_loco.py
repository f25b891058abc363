"""The leave-one-category-out evaluation (bench/nab_loco.py) never lets the held-out
category choose its own parameters or threshold, and pools as NAB pools files.

Runs the shared NAB scorer on a small NAB-layout corpus written to a temporary folder.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import nab_loco

TOOLS = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "nab"
N, WINDOW = 200, (100, 120)


def _corpus(tmp_path: Path, categories: list[str]):
    if not (TOOLS / "nab_score.py").exists():
        pytest.skip(f"shared NAB tools not found at {TOOLS}")
    nab_score = nab_loco.load_nab_score(str(TOOLS))
    start = datetime(2020, 1, 1, tzinfo=UTC)
    stamps = [(start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(N)]
    labels = {}
    for cat in categories:
        d = tmp_path / "data" / cat
        d.mkdir(parents=True)
        (d / "f.csv").write_text("timestamp,value\n" + "".join(f"{t},1\n" for t in stamps))
        labels[f"{cat}/f.csv"] = [[stamps[WINDOW[0]], stamps[WINDOW[1]]]]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    return nab_score, nab_score.Corpus(str(tmp_path))


def _hits(cats_hit: set[str], categories: list[str]) -> dict[str, list[float]]:
    """Scores firing once at the start of the window in the given categories only."""
    out = {}
    for cat in categories:
        s = [0.0] * N
        if cat in cats_hit:
            s[WINDOW[0]] = 0.9
        out[f"{cat}/f.csv"] = s
    return out


def test_a_held_out_category_is_scored_with_what_its_training_categories_chose(tmp_path):
    cats = ["alpha", "beta", "gamma"]
    nab_score, corpus = _corpus(tmp_path, cats)
    profile = nab_score.load_profiles()["standard"]
    # "fits_alpha" is perfect on alpha alone; "fits_others" on beta and gamma alone.
    cands = [({"p": "fits_alpha"}, _hits({"alpha"}, cats), None),
             ({"p": "fits_others"}, _hits({"beta", "gamma"}, cats), None)]
    folds = {f.heldout: f for f in nab_loco.loco(nab_score, corpus, cands, profile)}
    alpha = folds["alpha"]
    assert alpha.params == {"p": "fits_others"}         # chosen on beta + gamma
    assert alpha.detected == 0 and alpha.score == pytest.approx(0.0)
    # With a peek at alpha, "fits_alpha" would have scored it near 100.
    peek = nab_score.score_detector(corpus.restrict({"alpha/f.csv"}), cands[0][1],
                                    {"p": profile})["p"]["score"]
    assert peek > 90


def test_false_positives_on_anomaly_free_series_weigh_in_the_training_objective(tmp_path):
    cats = ["alpha", "beta"]
    nab_score, corpus = _corpus(tmp_path, cats)
    profile = nab_score.load_profiles()["standard"]
    scores = _hits({"alpha", "beta"}, cats)
    quiet = nab_loco.best_threshold(nab_score, corpus, scores, profile)
    noisy_null = {"null/x": [0.0] * 1000 + [0.95] * 5 + [0.0] * 1000}   # after probation
    noisy = nab_loco.best_threshold(nab_score, corpus, scores, profile,
                                    nab_loco.null_rows(noisy_null))
    assert quiet[0] == pytest.approx(0.9) and quiet[1] > 90
    assert noisy[1] < quiet[1]                 # the null series' alarms cost


def test_the_loco_mean_weights_each_category_by_its_windows():
    def fold(score, windows):
        null, perfect = -float(windows), float(windows)     # standard profile
        raw = null + score / 100.0 * (perfect - null)
        return nab_loco.Fold("c", {}, 0.5, 0.0, score, raw, null, perfect, windows, 0)

    folds = [fold(90.0, 6), fold(60.0, 33), fold(80.0, 14)]
    expected = (90.0 * 6 + 60.0 * 33 + 80.0 * 14) / 53
    assert nab_loco.pooled(folds) == pytest.approx(expected)
    assert not math.isclose(nab_loco.pooled(folds), sum(f.score for f in folds) / 3)


def test_the_grid_is_every_combination_in_a_fixed_order():
    assert nab_loco.grid_points({"a": (1, 2), "b": ("x",)}) == [
        {"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert nab_loco.grid_points({}) == [{}]
