"""Two-sample drift statistics: a reference sample against a current one.

Pure functions over numbers (no clock, no I/O; randomness only from an explicit
``seed``). Each answers one question about "is the current sample drawn from the same
distribution as the reference?" and returns the statistic, a p-value where the test has
one, and an *effect size*: drift detection flags only when the p-value passes a
multiple-testing threshold **and** the effect is large enough to matter, so that very
large samples do not flag trivial shifts.

Numeric features:     ``ks_2samp`` (p-value, effect = D), ``wasserstein``, ``psi``.
Categorical features: ``chi_square`` (p-value), ``jensen_shannon`` (effect).
Text sketches (vectors): ``domain_classifier_auc`` (p-value, effect = AUC), ``mmd``
(both calibrated by seeded label permutations).
Quality scores:       ``quality_drop`` (one-sided Welch test on means; effect = drop).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = [
    "ChiSquare",
    "DomainAUC",
    "KS",
    "MMD",
    "Moments",
    "QualityDrop",
    "chi_square",
    "domain_classifier_auc",
    "jensen_shannon",
    "ks_2samp",
    "length_strata",
    "mmd",
    "psi",
    "quality_drop",
    "relabel",
    "wasserstein",
]


def _arr(x: Iterable[float]) -> np.ndarray:
    a = np.asarray(x if isinstance(x, np.ndarray) else list(x), dtype=np.float64)
    return a.ravel()


# --------------------------------------------------------------------------- numeric


class KS(NamedTuple):
    statistic: float  # D = max |F_ref - F_cur|, in [0, 1]; also the effect size
    p_value: float


def ks_2samp(ref: Iterable[float], cur: Iterable[float]) -> KS:
    """Two-sided two-sample Kolmogorov-Smirnov test (Smirnov's asymptotic p-value).

    Matches ``scipy.stats.ks_2samp(ref, cur, method="asymp")``. Ties are handled (the
    CDFs are compared on the pooled values); with discrete data the p-value is
    conservative, which only lowers false alarms.

    Returns:
        ``KS(statistic, p_value)``; ``KS(0.0, 1.0)`` when either sample is empty.
    """
    a, b = np.sort(_arr(ref)), np.sort(_arr(cur))
    n1, n2 = a.size, b.size
    if not n1 or not n2:
        return KS(0.0, 1.0)
    pooled = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, pooled, "right") / n1 - np.searchsorted(b, pooled, "right") / n2)))
    en = round(n1 * n2 / (n1 + n2))
    p = float(np.clip(_st.kstwo.sf(d, en), 0.0, 1.0))
    return KS(d, p)


def wasserstein(ref: Iterable[float], cur: Iterable[float]) -> float:
    """First Wasserstein (earth mover's) distance between the two empirical distributions.

    Same as ``scipy.stats.wasserstein_distance``: the area between the two CDFs, in the
    feature's unit (e.g. milliseconds). Returns 0.0 when either sample is empty.
    """
    a, b = np.sort(_arr(ref)), np.sort(_arr(cur))
    if not a.size or not b.size:
        return 0.0
    pooled = np.sort(np.concatenate([a, b]))
    widths = np.diff(pooled)
    fa = np.searchsorted(a, pooled[:-1], "right") / a.size
    fb = np.searchsorted(b, pooled[:-1], "right") / b.size
    return float(np.sum(np.abs(fa - fb) * widths))


def psi(ref: Iterable[float], cur: Iterable[float], bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index over the reference's quantile bins.

    ``PSI = sum((c_i - r_i) * ln(c_i / r_i))`` with ``r_i``/``c_i`` the shares of each
    sample in bin ``i``; bins are the reference's ``bins``-quantiles (duplicate edges
    merged, so a discrete feature gets fewer bins), shares floored at ``eps`` so an
    empty bin does not give infinity. Rule of thumb: < 0.1 stable, > 0.25 shifted.
    Note the small-sample bias: about ``(bins - 1) * (1/n_ref + 1/n_cur)`` with no shift.

    Returns:
        PSI >= 0; 0.0 when either sample is empty.
    """
    a, b = _arr(ref), _arr(cur)
    if not a.size or not b.size:
        return 0.0
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, a, "right"), minlength=edges.size + 1) / a.size
    c = np.bincount(np.searchsorted(edges, b, "right"), minlength=edges.size + 1) / b.size
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


# ----------------------------------------------------------------------- categorical


class ChiSquare(NamedTuple):
    statistic: float
    p_value: float
    dof: int


#: Name of the column that pools categories too rare for the chi-square approximation.
RARE = "<rare>"


def _table(ref: Mapping[str, float], cur: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    cats = sorted(set(ref) | set(cur))
    table = np.array([[ref.get(k, 0) for k in cats], [cur.get(k, 0) for k in cats]], dtype=np.float64)
    return cats, table


def chi_square(ref: Mapping[str, float], cur: Mapping[str, float], min_expected: float = 5.0) -> ChiSquare:
    """Chi-square test of homogeneity on the 2 x K table of category counts.

    Categories whose smallest expected count is below ``min_expected`` are pooled into
    one ``<rare>`` column (the chi-square approximation is poor for them); if that pooled
    column is itself still below ``min_expected`` it is dropped. Without pooling this is
    ``scipy.stats.chi2_contingency(table, correction=False)``.

    Returns:
        ``ChiSquare(statistic, p_value, dof)``; ``(0.0, 1.0, 0)`` when either side has no
        counts or fewer than two categories remain.
    """
    _, t = _table(ref, cur)
    if t.size == 0 or t[0].sum() <= 0 or t[1].sum() <= 0:
        return ChiSquare(0.0, 1.0, 0)

    def expected(tab: np.ndarray) -> np.ndarray:
        return np.outer(tab.sum(axis=1), tab.sum(axis=0)) / tab.sum()

    rare = expected(t).min(axis=0) < min_expected
    if rare.any():
        pooled = t[:, rare].sum(axis=1, keepdims=True)
        t = np.concatenate([t[:, ~rare], pooled], axis=1)
        if expected(t)[:, -1].min() < min_expected:
            t = t[:, :-1]
    if t.shape[1] < 2 or t[0].sum() <= 0 or t[1].sum() <= 0:
        return ChiSquare(0.0, 1.0, 0)
    e = expected(t)
    stat = float(np.sum((t - e) ** 2 / e))
    dof = t.shape[1] - 1
    return ChiSquare(stat, float(_st.chi2.sf(stat, dof)), dof)


def jensen_shannon(ref: Mapping[str, float], cur: Mapping[str, float]) -> float:
    """Jensen-Shannon *distance* (base 2, in [0, 1]) between the two category distributions.

    Same as ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` over the union of
    categories. 0 means identical shares, 1 disjoint supports. Returns 0.0 when either
    side has no counts.
    """
    _, t = _table(ref, cur)
    if t.size == 0 or t[0].sum() <= 0 or t[1].sum() <= 0:
        return 0.0
    p, q = t[0] / t[0].sum(), t[1] / t[1].sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


# --------------------------------------------------------------------- multivariate


class DomainAUC(NamedTuple):
    auc: float  # cross-validated AUC; 0.5 = indistinguishable; the effect size
    p_value: float  # one-sided (AUC above chance), normal tail of the permutation null
    p_perm: float  # plain permutation p-value, (1 + #null >= obs) / (1 + permutations)
    null_mean: float
    null_sd: float


def domain_classifier_auc(
    ref: np.ndarray, cur: np.ndarray, *, seed: int = 0, folds: int = 5, permutations: int = 200, ridge: float = 1.0,
    strata: np.ndarray | None = None,
) -> DomainAUC:
    """How well a linear classifier tells current rows from reference rows.

    The classifier is scikit-learn's ``RidgeClassifier(alpha=ridge)``; each row is
    scored out of fold with seeded, stratified ``folds``-fold cross-validation, and the
    AUC of those scores is the effect size (equal to ``roc_auc_score`` of
    ``cross_val_predict(RidgeClassifier(), x, y, cv=StratifiedKFold(folds, shuffle=True,
    random_state=seed), method="decision_function")``).

    Why not a Mann-Whitney p-value on the out-of-fold scores: the folds' models share
    training rows, and with no drift the cross-validated AUC varies ~1.3x more than
    Mann-Whitney assumes, which at Bonferroni thresholds means false alarms. Instead the
    same cross-validation is refitted on ``permutations`` seeded relabellings (ridge has
    a closed form whose matrix does not depend on the labels, so all relabellings cost one
    solve per fold), and the p-value is the normal tail (an AUC is a U-statistic, close to
    normal) of the observed AUC under the relabellings' mean and spread.

    Args:
        ref, cur: 2-D arrays ``(n, d)`` of the same width (e.g. text sketches).
        seed: Fold and relabelling seed; the same inputs and seed give the same answer.
        strata: Optional stratum of each row (``ref`` rows, then ``cur`` rows): labels
            are then relabelled within strata only (see ``relabel``).

    Returns:
        ``DomainAUC``; ``(0.5, 1.0, 1.0, 0.5, 0.0)`` when a side has fewer rows than folds;
        with ``permutations < 2`` only the AUC (the rest NaN), for an effect size alone.
    """
    from sklearn.model_selection import StratifiedKFold

    a, b = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < folds or b.shape[0] < folds:
        return DomainAUC(0.5, 1.0, 1.0, 0.5, 0.0)
    x = np.vstack([a, b])
    n0, n1 = a.shape[0], b.shape[0]
    y = np.concatenate([np.zeros(n0), np.ones(n1)])
    rng = np.random.default_rng(seed)
    labels = np.stack([y] + [relabel(y, strata, rng) for _ in range(permutations)], axis=1)  # column 0: observed
    targets = 2 * labels - 1  # RidgeClassifier regresses on -1 / +1
    scores = np.empty_like(targets)
    eye = ridge * np.eye(x.shape[1])
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        mean = x[tr].mean(axis=0)
        xc = x[tr] - mean  # centring x (and so y) leaves the intercept unpenalised, as sklearn
        w = np.linalg.solve(xc.T @ xc + eye, xc.T @ targets[tr])
        scores[te] = (x[te] - mean) @ w + targets[tr].mean(axis=0)
    aucs = _row_aucs(np.ascontiguousarray(scores.T), np.ascontiguousarray(labels.T), n1)
    obs, null = float(aucs[0]), aucs[1:]
    if permutations < 2:
        return DomainAUC(obs, math.nan, math.nan, math.nan, math.nan)
    p_perm = (1 + int(np.sum(null >= obs))) / (1 + permutations)
    mu, sd = float(null.mean()), float(null.std(ddof=1))
    p = float(_st.norm.sf(obs, mu, sd)) if sd > 0 else p_perm
    return DomainAUC(obs, p, p_perm, mu, sd)


def _row_aucs(scores: np.ndarray, labels: np.ndarray, n1: int) -> np.ndarray:
    """AUC of each row of ``scores`` (R, n) for 0/1 ``labels`` (R, n) with ``n1`` ones per
    row; ties get average ranks. One sort for all rows (``scipy.stats.rankdata`` sorts
    three times, which was most of the cost of 200 relabellings)."""
    r, n = scores.shape
    order = np.argsort(scores, axis=1)
    sv = np.take_along_axis(scores, order, axis=1).ravel()
    lab = np.take_along_axis(labels, order, axis=1).ravel()
    new = np.ones(sv.size, dtype=bool)
    new[1:] = sv[1:] != sv[:-1]
    new[::n] = True  # a tie group never spans two rows
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], sv.size) - 1
    avg = (starts % n + ends % n) / 2 + 1  # average 1-based rank of each tie group
    ranks = avg[np.cumsum(new) - 1]
    rank_sums = np.sum((ranks * lab).reshape(r, n), axis=1)
    return (rank_sums - n1 * (n1 + 1) / 2) / ((n - n1) * n1)


def relabel(y: np.ndarray, strata: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of the labels ``y``; with ``strata``, within each stratum only.

    A stratified relabelling keeps each stratum's label counts, so the permutation null
    holds whatever differs between the samples *through* the strata.  Drift detection
    stratifies text sketches by text length: the null then includes what a change of
    length alone does to the sketches (longer texts have denser, less noisy sketches),
    and only a change of content *at equal length* is significant.
    """
    if strata is None:
        return rng.permutation(y)
    order = np.lexsort((rng.random(y.size), strata))  # by stratum, random within
    out = np.empty_like(y)
    out[np.argsort(strata, kind="stable")] = y[order]
    return out


def length_strata(ref: np.ndarray, cur: np.ndarray, bins: int = 8) -> np.ndarray | None:
    """Strata of rows by length: the pooled ``bins``-quantile bins of ``log1p(length)``
    (equal edges merged), ``ref`` rows then ``cur`` rows.

    Returns:
        One integer per row; None when a length is missing (NaN) or all are equal.
    """
    x = np.log1p(np.concatenate([_arr(ref), _arr(cur)]))
    if not x.size or not np.all(np.isfinite(x)):
        return None
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    strata = np.searchsorted(edges, x, "right")
    return strata if np.unique(strata).size > 1 else None


class MMD(NamedTuple):
    mmd2: float  # unbiased squared MMD with a Gaussian kernel; ~0 without drift
    p_value: float  # tail of a Pearson III fitted to the permutation null
    p_perm: float  # plain permutation p-value, (1 + #null >= obs) / (1 + permutations)
    bandwidth: float


def _mmd2_batch(k: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``s`` (1 = sample X, 0 = sample Y) on kernel ``k``."""
    n = s.sum(axis=1)
    m = k.shape[0] - n
    t = 1.0 - s
    ks = s @ k
    kxx = np.einsum("ij,ij->i", ks, s) - n  # minus the diagonal (k(x, x) = 1)
    kxy = np.einsum("ij,ij->i", ks, t)
    kyy = k.sum() - 2 * kxy - (kxx + n) - m
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)


def mmd(ref: np.ndarray, cur: np.ndarray, *, seed: int = 0, permutations: int = 200,
        strata: np.ndarray | None = None) -> MMD:
    """Maximum mean discrepancy test with a Gaussian kernel (median-distance bandwidth).

    The null distribution comes from ``permutations`` seeded relabellings of the pooled
    rows. A permutation p-value cannot go below ``1 / (permutations + 1)``, too coarse
    for the Bonferroni thresholds of a detector, so ``p_value`` is the upper tail of a
    Pearson type III (gamma with skew) matched to the null's mean, variance and skewness;
    ``p_perm`` is the plain permutation p-value for reference.  With ``strata`` (one per
    row, ``ref`` rows first) rows are relabelled within their stratum only (``relabel``).

    Returns:
        ``MMD(mmd2, p_value, p_perm, bandwidth)``; ``(0.0, 1.0, 1.0, 0.0)`` when a side
        has fewer than 2 rows or all rows are identical.
    """
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 or b.shape[0] < 2:
        return MMD(0.0, 1.0, 1.0, 0.0)
    x = np.vstack([a, b])
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    iu = np.triu_indices(x.shape[0], 1)
    med = float(np.median(d2[iu]))
    if med <= 0:
        return MMD(0.0, 1.0, 1.0, 0.0)
    k = np.exp(-d2 / med)  # exp(-d^2 / (2 sigma^2)) with sigma^2 = median(d^2) / 2
    s0 = np.zeros((1, x.shape[0]))
    s0[0, : a.shape[0]] = 1.0
    obs = float(_mmd2_batch(k, s0)[0])
    rng = np.random.default_rng(seed)
    perms = np.stack([relabel(s0[0], strata, rng) for _ in range(permutations)])
    null = _mmd2_batch(k, perms)
    p_perm = (1 + int(np.sum(null >= obs))) / (1 + permutations)
    sd = float(null.std(ddof=1))
    if sd <= 0:
        return MMD(obs, p_perm, p_perm, math.sqrt(med / 2))
    skew = float(_st.skew(null))
    p = float(_st.pearson3.sf(obs, skew, loc=float(null.mean()), scale=sd))
    return MMD(obs, p, p_perm, math.sqrt(med / 2))


# --------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of a sample (mergeable, exact)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        a = _arr(values)
        if not a.size:
            return cls()
        mean = float(a.mean())
        return cls(int(a.size), mean, float(np.sum((a - mean) ** 2)))

    def add(self, x: float) -> Moments:
        """This sample plus one value (Welford's update)."""
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return Moments(n, mean, self.m2 + delta * (x - mean))

    def merge(self, other: Moments) -> Moments:
        """Moments of both samples together (Chan et al.)."""
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta**2 * self.n * other.n / n)

    @property
    def var(self) -> float:
        """Sample variance (ddof=1); 0.0 with fewer than two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


class QualityDrop(NamedTuple):
    drop: float  # reference mean - current mean (positive = worse); the effect size
    statistic: float  # Welch t of current vs reference
    p_value: float  # one-sided: current mean < reference mean


def quality_drop(ref: Moments | Sequence[float], cur: Moments | Sequence[float]) -> QualityDrop:
    """One-sided Welch t-test that the current quality mean is below the reference's.

    Equals ``scipy.stats.ttest_ind(cur, ref, equal_var=False, alternative="less")`` on
    raw samples; taking ``Moments`` lets a detector keep exact running sums instead of
    every score. The reference may be a pinned window or golden-set scores.

    Returns:
        ``QualityDrop(drop, t, p_value)``; ``(0.0, 0.0, 1.0)`` when a side has fewer than
        two values. With zero variance on both sides, p is 0.0 if the mean dropped, else 1.0.
    """
    r = ref if isinstance(ref, Moments) else Moments.of(ref)
    c = cur if isinstance(cur, Moments) else Moments.of(cur)
    if r.n < 2 or c.n < 2:
        return QualityDrop(0.0, 0.0, 1.0)
    drop = r.mean - c.mean
    vr, vc = r.var / r.n, c.var / c.n
    se2 = vr + vc
    if se2 <= 0:
        return QualityDrop(drop, -math.inf if drop > 0 else 0.0, 0.0 if drop > 0 else 1.0)
    t = (c.mean - r.mean) / math.sqrt(se2)
    df = se2**2 / (vr**2 / (r.n - 1) + vc**2 / (c.n - 1))
    return QualityDrop(drop, t, float(_st.t.cdf(t, df)))
