"""Anomaly-free synthetic series: what a detector must stay quiet on.

Generic stationary families, generated with a seeded numpy generator (no data file):
white, heavy-tailed and log-normal noise, AR(1) and random-walk wander, low counts,
integer-quantised noise, zero-inflated counts, a noisy daily sine, a noisy daily square
wave, and an hourly series with a daily and a weekend pattern. Any detection on them
after the probation period is a false positive. They are the same for every run
(``series(seed)`` is deterministic) and are never NAB data.
"""

from __future__ import annotations

import numpy as np

FIVE_MIN = 300.0
HOUR = 3600.0
FAMILIES = ("gauss", "t3", "lognormal", "ar1", "walk", "poisson", "quantised",
            "zero_inflated", "daily_sine", "daily_square", "hourly_weekly")


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    e = rng.standard_normal(n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def family(name: str, n: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """(time step in seconds, n values) of one family; ValueError for an unknown name."""
    day = np.sin(2 * np.pi * np.arange(n) * FIVE_MIN / 86400.0)
    if name == "gauss":
        return FIVE_MIN, 50 + 5 * rng.standard_normal(n)
    if name == "t3":
        return FIVE_MIN, 50 + 5 * rng.standard_t(3, n)
    if name == "lognormal":
        return FIVE_MIN, np.exp(rng.standard_normal(n))
    if name == "ar1":
        return FIVE_MIN, 100 + _ar1(rng, n, 0.95)
    if name == "walk":
        return FIVE_MIN, 100 + np.cumsum(rng.standard_normal(n))
    if name == "poisson":
        return FIVE_MIN, rng.poisson(2.0, n).astype(float)
    if name == "quantised":
        return FIVE_MIN, np.round(30 + 3 * rng.standard_normal(n))
    if name == "zero_inflated":
        return FIVE_MIN, np.where(rng.random(n) < 0.03, rng.poisson(4.0, n) + 1.0, 0.0)
    if name == "daily_sine":
        return FIVE_MIN, 50 + 20 * day + 2 * rng.standard_normal(n)
    if name == "daily_square":
        return FIVE_MIN, np.where(day > 0, 80.0, 20.0) + rng.standard_normal(n)
    if name == "hourly_weekly":
        h = np.arange(n)
        return HOUR, (100 + 30 * np.sin(2 * np.pi * h / 24) + 20 * ((h // 24) % 7 >= 5)
                      + 5 * rng.standard_normal(n))
    raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")


def series(seeds: int = 2, n: int = 4000, start: float = 1.6e9) -> dict[str, list[tuple[float, float]]]:
    """{"null/<family>-<seed>": [(t, x)]} for every family and seed 0..seeds-1."""
    out = {}
    for name in FAMILIES:
        for seed in range(seeds):
            rng = np.random.default_rng([seed, FAMILIES.index(name)])
            step, x = family(name, n, rng)
            out[f"null/{name}-{seed}"] = [(start + i * step, float(v)) for i, v in enumerate(x)]
    return out


def probation(n: int) -> int:
    """Rows ignored at the start of a series, as NAB ignores them."""
    return int(min(0.15 * n, 750))


def false_positives(scores: list[float], threshold: float | None) -> int:
    """Detections (score >= threshold) after probation; 0 when never firing."""
    if threshold is None:
        return 0
    return sum(s >= threshold for s in scores[probation(len(scores)):])
