"""Wilcoxon signed-rank against scipy; mean/std; relative gain."""

import numpy as np
import pytest
from scipy import stats

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.stats import mean_std, relative_gain, wilcoxon_p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(30, 10, size=200)
    b = a + rng.normal(0.5, 3, size=200)
    b[:20] = a[:20]  # ties (zero differences) are dropped by zero_method="wilcox"
    expected = stats.wilcoxon(a, b, zero_method="wilcox").pvalue
    assert wilcoxon_p(a, b) == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_degenerate_and_errors():
    assert wilcoxon_p([1.0, 2.0], [1.0, 2.0]) == 1.0
    with pytest.raises(SpectrumKDError):
        wilcoxon_p([1.0], [1.0, 2.0])
    with pytest.raises(SpectrumKDError):
        wilcoxon_p([], [])


def test_mean_std_and_gain():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, np.std([1, 2, 3])))
    assert relative_gain(110.0, 100.0) == pytest.approx(10.0)
    assert relative_gain(1.0, 0.0) is None


# ------------------------------------------------------------------ paired seeds (issue 18)
from itertools import product  # noqa: E402

from spectrumkd.evaluate.stats import (  # noqa: E402
    bootstrap_ci,
    curve_auc,
    exact_wilcoxon_p,
    paired_seeds,
)

FIXED = [  # (arm, baseline) per seed: no zero and no tied |difference|
    ([0.91, 0.85, 0.88, 0.95, 0.79, 0.90], [0.97, 0.83, 0.96, 0.99, 0.87, 0.85]),
    ([2.1, 2.4, 1.9, 2.2, 2.0, 2.6, 2.3, 1.7], [2.0, 2.2, 2.05, 1.91, 1.6, 2.34, 1.99, 1.82]),
    ([10.0, 11.0, 12.5], [9.0, 9.5, 10.0]),
]


@pytest.mark.parametrize("a, b", FIXED)
def test_exact_wilcoxon_matches_scipy_exact(a, b):
    expected = stats.wilcoxon(a, b, method="exact").pvalue
    assert exact_wilcoxon_p(a, b) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, floor", [(3, 0.25), (5, 0.0625), (6, 0.03125)])
def test_exact_p_cannot_go_below_two_over_two_to_the_n(n, floor):
    assert exact_wilcoxon_p(list(range(1, n + 1)), [0] * n) == floor == 2 / 2**n
    assert exact_wilcoxon_p([0] * n, list(range(1, n + 1))) == floor
    assert stats.wilcoxon(list(range(1, n + 1)), [0] * n, method="exact").pvalue == pytest.approx(floor)


def _brute_force_p(d):
    """Every sign pattern of the average ranks of the non-zero |d|: the exact null by hand."""
    d = [x for x in d if x != 0]
    ranks = stats.rankdata(np.abs(d))
    t_plus = sum(r for r, x in zip(ranks, d) if x > 0)
    t = max(t_plus, ranks.sum() - t_plus)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in product([0, 1], repeat=len(d))]
    return min(1.0, 2 * sum(s >= t - 1e-9 for s in sums) / len(sums))


def test_exact_wilcoxon_with_ties_and_zeros_is_the_exact_sign_enumeration():
    a = [1.0, 2.0, 3.0, 3.0, 5.0, 1.0, 7.0]
    b = [0.0, 3.0, 1.0, 1.0, 5.0, 0.0, 4.0]  # |d| = 1, 1, 2, 2, 0 (dropped), 1, 3
    assert exact_wilcoxon_p(a, b) == pytest.approx(_brute_force_p(np.subtract(a, b)), rel=1e-12)
    assert exact_wilcoxon_p([1.0, 2.0], [1.0, 2.0]) == 1.0
    with pytest.raises(SpectrumKDError):
        exact_wilcoxon_p([1.0], [1.0, 2.0])


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    d = [0.3, -0.1, 0.5, 0.2, 0.7, -0.4]
    lo, hi = bootstrap_ci(d)
    assert bootstrap_ci(d) == (lo, hi)
    assert lo < np.mean(d) < hi and min(d) <= lo and hi <= max(d)
    assert bootstrap_ci(d, resamples=20, seed=1) != bootstrap_ci(d, resamples=20, seed=2)
    # by hand: 4 resamples of 2 from a fixed generator
    idx = np.random.default_rng(0).integers(0, 2, size=(4, 2))
    means = np.array([0.0, 1.0])[idx].mean(axis=1)
    assert bootstrap_ci([0.0, 1.0], resamples=4) == tuple(np.quantile(means, [0.025, 0.975]))


def test_paired_seeds_uses_the_common_seeds():
    a, b = FIXED[0]
    arm = dict(enumerate(a))
    base = {**dict(enumerate(b)), 99: 0.0}
    r = paired_seeds(arm, base)
    assert r["n_seeds"] == 6
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert r["p"] == pytest.approx(stats.wilcoxon(a, b, method="exact").pvalue)
    assert r["ci95"][0] <= r["mean_diff"] <= r["ci95"][1]
    assert paired_seeds({1: 1.0}, {2: 1.0})["p"] is None


def test_curve_auc():
    assert curve_auc([[0, 1.0], [4, 3.0]]) == 2.0
    assert curve_auc([[10, 2.0], [0, 4.0], [20, 2.0]]) == 2.5  # sorted by step
    assert curve_auc([[5, 7.0]]) == 7.0
