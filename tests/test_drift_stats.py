"""Drift statistics agree with scipy / scikit-learn reference computations on fixed samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from adaptd.streams.processors.drift import stats as ds


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


# ----------------------------------------------------------------------- numeric


def test_ks_matches_scipy_asymptotic_on_continuous_and_tied_samples(rng):
    cont_a, cont_b = rng.lognormal(0, 0.8, 300), rng.lognormal(0.2, 0.8, 250)
    tied_a, tied_b = rng.integers(0, 10, 100), rng.integers(0, 12, 80)
    for a, b in [(cont_a, cont_b), (tied_a, tied_b), ([1.0, 2.0, 3.0], [2.5])]:
        ours, ref = ds.ks_2samp(a, b), stats.ks_2samp(a, b, method="asymp")
        assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_ks_of_an_empty_sample_is_no_evidence():
    assert ds.ks_2samp([], [1.0, 2.0]) == (0.0, 1.0)


def test_wasserstein_matches_scipy(rng):
    a, b = rng.lognormal(6.7, 0.6, 200), rng.lognormal(7.1, 0.6, 150)
    assert ds.wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12)
    assert ds.wasserstein([0, 0, 1], [0, 1, 1, 5]) == pytest.approx(stats.wasserstein_distance([0, 0, 1], [0, 1, 1, 5]))
    assert ds.wasserstein([], [1.0]) == 0.0


def test_psi_is_the_symmetric_kl_divergence_of_reference_decile_shares(rng):
    a, b = rng.normal(0, 1, 1000), rng.normal(0.5, 1, 800)
    edges = np.quantile(a, np.linspace(0, 1, 11)[1:-1])
    r = np.bincount(np.searchsorted(edges, a, "right"), minlength=10) / a.size
    c = np.bincount(np.searchsorted(edges, b, "right"), minlength=10) / b.size
    expected = stats.entropy(c, r) + stats.entropy(r, c)  # PSI = KL(c||r) + KL(r||c)
    assert ds.psi(a, b) == pytest.approx(expected, rel=1e-9)
    assert ds.psi(a, b) > 0.1  # half a standard deviation is past the "stable" rule of thumb
    assert ds.psi(a, a) == 0.0


def test_psi_of_a_discrete_feature_merges_duplicate_bin_edges():
    ref, cur = [1] * 50 + [2] * 50, [1] * 20 + [2] * 80
    # Edges collapse to {1, 2}: bins (<1), [1, 2), [2, inf) -> shares 0/.5/.5 vs 0/.2/.8.
    expected = (0.2 - 0.5) * np.log(0.2 / 0.5) + (0.8 - 0.5) * np.log(0.8 / 0.5)
    assert ds.psi(ref, cur) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------- categorical


def test_chi_square_matches_scipy_contingency_when_no_category_is_rare():
    ref, cur = {"a": 50, "b": 30, "c": 20}, {"a": 30, "b": 30, "c": 35, "d": 25}
    ours = ds.chi_square(ref, cur)
    stat, p, dof, _ = stats.chi2_contingency([[50, 30, 20, 0], [30, 30, 35, 25]], correction=False)
    assert (ours.statistic, ours.p_value, ours.dof) == (pytest.approx(stat), pytest.approx(p), dof)


def test_chi_square_pools_rare_categories_into_one_column():
    ref, cur = {"a": 50, "b": 30, "x": 3, "y": 2}, {"a": 30, "b": 40, "x": 4, "y": 3}
    # x and y expect < 5 counts: pooled into one column (5 vs 7), which expects >= 5.
    stat, p, dof, _ = stats.chi2_contingency([[50, 30, 5], [30, 40, 7]], correction=False)
    ours = ds.chi_square(ref, cur)
    assert (ours.statistic, ours.p_value, ours.dof) == (pytest.approx(stat), pytest.approx(p), dof)


def test_chi_square_drops_a_pooled_column_still_too_rare():
    ref, cur = {"a": 50, "b": 30, "x": 1}, {"a": 30, "b": 40, "y": 1}
    stat, p, dof, _ = stats.chi2_contingency([[50, 30], [30, 40]], correction=False)
    assert ds.chi_square(ref, cur) == (pytest.approx(stat), pytest.approx(p), dof)


def test_chi_square_without_two_categories_or_counts_is_no_evidence():
    assert ds.chi_square({"ok": 100}, {"ok": 80}) == (0.0, 1.0, 0)
    assert ds.chi_square({}, {"ok": 80}) == (0.0, 1.0, 0)


def test_jensen_shannon_matches_scipy_and_spans_zero_to_one():
    ref, cur = {"a": 50, "b": 30, "c": 20}, {"a": 30, "b": 30, "c": 35, "d": 5}
    assert ds.jensen_shannon(ref, cur) == pytest.approx(jensenshannon([50, 30, 20, 0], [30, 30, 35, 5], base=2))
    assert ds.jensen_shannon(ref, ref) == 0.0
    assert ds.jensen_shannon({"a": 3}, {"b": 7}) == pytest.approx(1.0)
    assert ds.jensen_shannon({}, {"b": 7}) == 0.0


# ------------------------------------------------------------------ multivariate


def test_domain_classifier_auc_is_sklearn_ridge_cross_validated_auc(rng):
    a, b = rng.normal(size=(60, 5)), rng.normal(size=(40, 5)) + 0.3
    x, y = np.vstack([a, b]), np.r_[np.zeros(60), np.ones(40)]
    cv = StratifiedKFold(5, shuffle=True, random_state=3)
    scores = cross_val_predict(RidgeClassifier(), x, y, cv=cv, method="decision_function")
    result = ds.domain_classifier_auc(a, b, seed=3, permutations=50)
    assert result.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert 1 / 51 <= result.p_perm <= 1


def test_domain_classifier_auc_counts_ties_as_one_half():
    # Identical rows get identical scores: every pair is a tie, AUC exactly 0.5.
    same = np.ones((20, 3))
    assert ds.domain_classifier_auc(same, same, permutations=0).auc == 0.5


def test_domain_classifier_detects_a_shift_and_is_deterministic(rng):
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(150, 8))
    b[:, 0] += 1.0
    first, again = ds.domain_classifier_auc(a, b, seed=7), ds.domain_classifier_auc(a, b, seed=7)
    assert first == again
    assert first.auc > 0.7 and first.p_value < 1e-8


def test_domain_classifier_p_values_are_calibrated_without_drift(rng):
    # Mann-Whitney on pooled out-of-fold scores would spread these z-scores ~1.3x wider.
    z = []
    for seed in range(60):
        r = ds.domain_classifier_auc(rng.normal(size=(80, 8)), rng.normal(size=(60, 8)), seed=seed, permutations=100)
        z.append(stats.norm.isf(r.p_value))
    assert 0.75 < np.std(z) < 1.2
    assert abs(np.mean(z)) < 0.4


def test_domain_classifier_with_too_few_rows_is_no_evidence():
    assert ds.domain_classifier_auc(np.zeros((3, 2)), np.ones((10, 2))) == (0.5, 1.0, 1.0, 0.5, 0.0)


def test_mmd_equals_the_unbiased_estimate_on_sklearn_rbf_kernel(rng):
    a, b = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) + 0.5
    result = ds.mmd(a, b, seed=1, permutations=100)
    gamma = 1 / (2 * result.bandwidth**2)
    kxx, kyy, kxy = rbf_kernel(a, a, gamma=gamma), rbf_kernel(b, b, gamma=gamma), rbf_kernel(a, b, gamma=gamma)
    expected = ((kxx.sum() - 40) / (40 * 39)) + ((kyy.sum() - 30) / (30 * 29)) - 2 * kxy.mean()
    assert result.mmd2 == pytest.approx(expected, rel=1e-9)
    pooled = np.vstack([a, b])
    d2 = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1)
    assert result.bandwidth**2 == pytest.approx(np.median(d2[np.triu_indices(70, 1)]) / 2)


def test_mmd_separates_shifted_from_same_distribution_samples(rng):
    a = rng.normal(size=(150, 8))
    shifted = ds.mmd(a, rng.normal(size=(150, 8)) + 0.4, seed=2)
    same = ds.mmd(a, rng.normal(size=(150, 8)), seed=2)
    assert shifted.p_value < 1e-6 and shifted.p_perm == 1 / 201
    assert same.p_value > 0.01 and same.p_perm > 0.01
    assert ds.mmd(a, rng.normal(size=(150, 8)), seed=2) != same  # new data, new answer
    assert ds.mmd(a[:1], a) == (0.0, 1.0, 1.0, 0.0)


# ----------------------------------------------------------------------- quality


def test_quality_drop_matches_scipy_one_sided_welch_test(rng):
    ref, cur = 0.6 + 0.3 * rng.random(50), 0.55 + 0.3 * rng.random(40)
    ours = ds.quality_drop(ref, cur)
    theirs = stats.ttest_ind(cur, ref, equal_var=False, alternative="less")
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.drop == pytest.approx(ref.mean() - cur.mean())
    # An improvement is never a drop.
    assert ds.quality_drop(cur, ref).p_value > 0.5


def test_quality_moments_merge_like_the_concatenated_sample(rng):
    a, b = rng.random(37), rng.random(12)
    m = ds.Moments()
    for x in a:
        m = m.add(float(x))
    merged = m.merge(ds.Moments.of(b))
    whole = ds.Moments.of(np.r_[a, b])
    assert merged.n == whole.n and merged.mean == pytest.approx(whole.mean) and merged.var == pytest.approx(whole.var)
    assert ds.quality_drop(merged, ds.Moments.of(b)) == pytest.approx(ds.quality_drop(np.r_[a, b], b))


def test_quality_drop_edge_cases():
    assert ds.quality_drop([1.0], [0.0, 0.0]) == (0.0, 0.0, 1.0)  # too few to test
    assert ds.quality_drop([1.0, 1.0], [0.5, 0.5]).p_value == 0.0  # no variance, lower mean
    assert ds.quality_drop([1.0, 1.0], [1.0, 1.0]).p_value == 1.0


def test_relabelling_within_strata_keeps_each_stratums_label_counts_and_is_seeded():
    y = np.array([0] * 30 + [1] * 20, dtype=float)
    strata = np.array([i % 3 for i in range(50)])
    a = ds.relabel(y, strata, np.random.default_rng(5))
    for s in range(3):
        assert a[strata == s].sum() == y[strata == s].sum()
    assert not np.array_equal(a, y)
    assert np.array_equal(a, ds.relabel(y, strata, np.random.default_rng(5)))


def test_length_strata_bin_pooled_lengths_and_refuse_unknown_or_constant_lengths():
    s = ds.length_strata(np.arange(1, 101), np.arange(50, 150))
    assert s is not None and s.shape == (200,) and np.unique(s).size == 8
    assert ds.length_strata(np.array([3.0, np.nan]), np.array([4.0])) is None
    assert ds.length_strata(np.full(10, 7.0), np.full(10, 7.0)) is None
