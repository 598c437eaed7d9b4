"""Statistics for comparing evaluation runs: Wilcoxon signed-rank test, mean/std, relative gain.

:func:`wilcoxon_p` is ``scipy.stats.wilcoxon`` (two-sided, ``zero_method="wilcox"``: pairs with
equal scores are dropped) over paired per-example scores, with the degenerate case made
explicit: when every pair is equal there is no evidence of a difference and p = 1.0 (scipy
would warn and return NaN). The paper reports "p < 0.05, Wilcoxon signed-rank test" for its
improvements over each baseline (§4.1).

References: Wilcoxon 1945; scipy.stats.wilcoxon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spectrumkd import SpectrumKDError


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired scores ``a`` vs ``b``.

    >>> wilcoxon_p([1, 2, 3], [1, 2, 3])
    1.0
    >>> round(wilcoxon_p([1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 0]), 4)
    0.0078
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise SpectrumKDError(f"paired scores must be two equal-length lists, got {x.shape}, {y.shape}")
    if x.size == 0:
        raise SpectrumKDError("the Wilcoxon test needs at least one pair")
    if np.all(x == y):
        return 1.0
    return float(stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0, as over the paper's 5 seeds).

    >>> mean_std([10.0, 20.0])
    (15.0, 5.0)
    """
    if len(values) == 0:
        raise SpectrumKDError("mean_std needs at least one value")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def relative_gain(value: float, baseline: float) -> float | None:
    """Relative gain of ``value`` over ``baseline`` in percent; None when the baseline is 0.

    >>> round(relative_gain(27.71, 25.72), 2)
    7.74
    """
    if baseline == 0:
        return None
    return 100.0 * (value - baseline) / abs(baseline)
