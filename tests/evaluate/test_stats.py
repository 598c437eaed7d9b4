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
