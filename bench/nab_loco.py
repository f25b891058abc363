"""Leave-one-category-out (LOCO) evaluation of the streaming detector on NAB data.

For each category of the corpus, every free parameter (one point of a small declared
grid of ``DetectorConfig`` fields) and the detection threshold are chosen on the
*other* categories only, as NAB chooses a threshold (best raw score summed over the
training files); the held-out category is then scored at that fixed threshold. No
score of the held-out category is ever looked at before its parameters are fixed.

The held-out figures are combined as NAB combines files: raw scores, null and perfect
scores are summed over the four held-out categories and normalised once,
``100 * (sum raw - sum null) / (sum perfect - sum null)``. In every NAB profile the
perfect minus null score of a category is ``tp * windows + fn * scored windows``, so
this pooled figure is the mean of the category scores weighted by their windows
(scored windows counted with the FN weight). The plain mean is reported beside it.

Optionally (``nab_bench.py --null-objective``) the false positives of each candidate
on anomaly-free synthetic series (bench/nab_null.py) also count in the training
objective, at NAB's full false-positive cost each; by default they are only reported.

Pure apart from reading the data through ``nab_score`` (the shared scorer, imported as
a module); detector scores are computed in-process, deterministically.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from adaptd.streams.processors.anomaly.detectors import Detector, DetectorConfig

#: The declared grid: DetectorConfig field -> candidate values. Every combination is
#: one candidate; the first of equally scoring candidates (grid order) wins.
GRID: dict[str, tuple] = {
    "alert_level": (0.5, 1.0, 2.0),
    "hold": (20, 40, 80),
}

Scores = dict[str, list[float]]


def grid_points(grid: Mapping[str, Iterable]) -> list[dict]:
    """Every combination of the grid's values, in a fixed order ({} for an empty grid)."""
    names = list(grid)
    return [dict(zip(names, vals)) for vals in itertools.product(*(grid[n] for n in names))]


def load_nab_score(tools: str):
    """The shared scorer module from ``tools`` (the folder holding nab_score.py)."""
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import nab_score  # type: ignore[import-not-found]
    return nab_score


def read_series(corpus, parse_time: Callable[[str], float], parse_value: Callable[[str], float],
                read_rows) -> dict[str, list[tuple]]:
    """{rel: [(epoch seconds, value)]} of every file of the corpus, in file order."""
    out = {}
    for df in corpus.files:
        rows = read_rows(os.path.join(corpus.root, "data", *df.rel.split("/")))
        out[df.rel] = [(parse_time(t), parse_value(v)) for t, v in rows]
    return out


def score_series(series: Mapping[str, list[tuple]], config: DetectorConfig) -> Scores:
    """Scores of a fresh ``Detector(config)`` over each series, one per row."""
    out = {}
    for rel, obs in series.items():
        det = Detector(config)
        out[rel] = [det.update(t, v) for t, v in obs]
    return out


@dataclass
class Fold:
    heldout: str
    params: dict
    threshold: float | None     # None: never fire was best on the training categories
    train_score: float
    score: float                # held-out, normalised, at the fixed threshold
    raw: float
    null: float
    perfect: float
    windows: int
    detected: int


def null_rows(null_scores: Scores | None) -> list[tuple]:
    """Scorer rows of anomaly-free series: every detection after probation is a false
    positive at full cost (as before a file's first window in NAB)."""
    from bench.nab_null import probation

    rows = []
    for sc in (null_scores or {}).values():
        rows.extend((s, None, -1.0) for s in sc[probation(len(sc)):])
    return rows


def best_threshold(nab_score, corpus, scores: Scores, profile: dict,
                   extra_rows: list[tuple] = ()) -> tuple[float | None, float]:
    """(threshold, normalised score) maximising the raw score on ``corpus`` plus the
    false positives among ``extra_rows`` (see ``null_rows``), the highest threshold
    winning ties, as ``nab_score`` optimises it; normalised over ``corpus``."""
    rows = nab_score._rows(corpus, scores) + list(extra_rows)
    sweep = nab_score.sweep_thresholds(corpus, scores, profile, rows)
    thr, raw = sweep[0]
    for t, r in sweep[1:]:
        if r > raw:
            thr, raw = t, r
    null, perfect = nab_score.baselines(corpus, profile)
    return (None if thr == math.inf else thr), nab_score.normalise(raw, null, perfect)


def loco(nab_score, corpus, candidates: list[tuple[dict, Scores, Scores | None]],
         profile: dict) -> list[Fold]:
    """One Fold per category: parameters and threshold chosen on the others (and on
    the false positives of the candidate's anomaly-free series, when given).

    ``candidates`` are (params, scores of every corpus file, scores of the null
    series or None) in grid order.
    """
    cats = sorted({df.rel.split("/")[0] for df in corpus.files})
    folds = []
    for held in cats:
        train = corpus.restrict({df.rel for df in corpus.files if not df.rel.startswith(held + "/")})
        test = corpus.restrict({df.rel for df in corpus.files if df.rel.startswith(held + "/")})
        best = None
        for params, scores, null in candidates:
            thr, sc = best_threshold(nab_score, train, scores, profile, null_rows(null))
            if best is None or sc > best[2]:
                best = (params, thr, sc, scores)
        if best is None:
            raise ValueError("loco: no candidates to choose from")
        params, thr, train_score, scores = best
        fixed = {"p": math.inf if thr is None else thr}
        res = nab_score.score_detector(test, scores, {"p": profile}, fixed=fixed)["p"]
        folds.append(Fold(held, params, thr, train_score, res["score"], res["raw"],
                          res["null_raw"], res["perfect_raw"], res["counts"]["windows"],
                          res["counts"]["windows_detected"]))
    return folds


def pooled(folds: list[Fold]) -> float:
    """NAB-normalised score of the held-out results taken together (window-weighted)."""
    raw = math.fsum(f.raw for f in folds)
    null = math.fsum(f.null for f in folds)
    perfect = math.fsum(f.perfect for f in folds)
    return 100.0 * (raw - null) / (perfect - null)


def candidates_for(series, grid: Mapping[str, Iterable], null_series=None,
                   base: DetectorConfig | None = None) -> list[tuple[dict, Scores, Scores | None]]:
    """(params, scores, null scores or None) for every grid point."""
    base = base or DetectorConfig()
    out = []
    for params in grid_points(grid):
        cfg = replace(base, **params)
        out.append((params, score_series(series, cfg),
                    None if null_series is None else score_series(null_series, cfg)))
    return out
