"""Statistics for comparing evaluation runs: Wilcoxon signed-rank tests, paired-seed comparisons,
bootstrap CIs, curve areas, mean/std, relative gain.

:func:`wilcoxon_p` is ``scipy.stats.wilcoxon`` (two-sided, ``zero_method="wilcox"``: pairs with
equal scores are dropped) over paired per-example scores, with the degenerate case made
explicit: when every pair is equal there is no evidence of a difference and p = 1.0 (scipy
would warn and return NaN). The paper reports "p < 0.05, Wilcoxon signed-rank test" for its
improvements over each baseline (§4.1).

Paired-seed comparisons (issue 18, :func:`paired_seeds`): a curriculum *is* a data order, so the
unit of evidence is the training seed (Dodge et al. 2020: data order and initialisation contribute
about equally to fine-tuning variance). For ``n`` training seeds run by both arms, the difference
arm − baseline of each seed's value gives the mean difference, a 95% percentile bootstrap CI over
seeds (:func:`bootstrap_ci`, seeded, so the same numbers give the same interval) and the *exact*
two-sided Wilcoxon signed-rank p (:func:`exact_wilcoxon_p`). With ``n`` non-zero differences the
exact p cannot fall below ``2/2^n``: 0.25 at n = 3, 0.0625 at 5, 0.031 at 6. The per-prompt test
(each prompt's score averaged over all seeds, :func:`wilcoxon_p`) stays a secondary column: its
prompts share one training seed's model, so it says more about the prompts than about the method.

References: Wilcoxon 1945; scipy.stats.wilcoxon; Efron & Tibshirani 1993 (percentile bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def exact_wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p for paired ``a`` vs ``b`` (any n).

    Zero differences are dropped (``zero_method="wilcox"``); tied ``|d|`` get their average rank,
    and the null distribution of the positive rank sum (each sign ±1 with probability 1/2) is
    counted exactly over the doubled, integer ranks, so ties keep the test exact (scipy's exact
    method assumes no ties). ``p = min(1, 2·P(T ≥ max(T+, T−)))``; with no non-zero difference
    p = 1. Equals ``scipy.stats.wilcoxon(a, b, method="exact")`` when there are no ties or zeros.

    >>> exact_wilcoxon_p([1, 2, 3], [0, 0, 0]), exact_wilcoxon_p([1, 2, 3, 4, 5, 6], [0] * 6)
    (0.25, 0.03125)
    """
    from scipy.stats import rankdata

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.shape(a) != np.shape(b) or d.ndim != 1:
        raise SpectrumKDError(f"paired values must be two equal-length lists, got {np.shape(a)}, "
                              f"{np.shape(b)}")
    if not np.all(np.isfinite(d)):
        raise SpectrumKDError("paired values must be finite numbers")
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    ranks2 = np.rint(2 * rankdata(np.abs(d))).astype(np.int64)  # average ranks, doubled: integers
    counts = np.zeros(int(ranks2.sum()) + 1)
    counts[0] = 1.0
    for r in ranks2:  # each rank is in the positive sum or not: 2^n equally likely sign patterns
        counts[r:] = counts[r:] + counts[:-r].copy()
    t_plus = int(ranks2[d > 0].sum())
    t = max(t_plus, int(ranks2.sum()) - t_plus)
    return float(min(1.0, 2.0 * counts[t:].sum() / counts.sum()))


def bootstrap_ci(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``: ``resamples`` draws of ``len(values)``
    with replacement from ``np.random.default_rng(seed)``, the ``(1 ± level)/2`` quantiles of their
    means. One value gives ``(v, v)``.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise SpectrumKDError("the bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_seeds(arm: Mapping, baseline: Mapping, *, resamples: int = 10_000,
                 seed: int = 0) -> dict:
    """Compare ``{training seed: value}`` of an arm with the baseline's over their common seeds:
    ``n_seeds``, ``mean_diff`` (arm − baseline), ``ci95`` (:func:`bootstrap_ci` of the
    differences) and ``p`` (:func:`exact_wilcoxon_p`); None values when no seed is common.

    >>> r = paired_seeds({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 1.0, 2: 1.0, 3: 9.0})
    >>> r["n_seeds"], r["mean_diff"], r["p"]
    (3, 2.0, 0.25)
    """
    common = sorted(set(arm) & set(baseline))
    if not common:
        return {"n_seeds": 0, "mean_diff": None, "ci95": None, "p": None}
    a = [float(arm[s]) for s in common]
    b = [float(baseline[s]) for s in common]
    d = np.subtract(a, b)
    return {"n_seeds": len(common), "mean_diff": float(d.mean()),
            "ci95": list(bootstrap_ci(d, resamples=resamples, seed=seed)),
            "p": exact_wilcoxon_p(a, b)}


def curve_auc(points: Sequence[Sequence[float]]) -> float:
    """Area under a curve of ``[step, value]`` points (trapezoids) divided by its step span: the
    curve's mean height, in the value's units, so arms at equal steps compare directly. One point
    gives its value.

    >>> curve_auc([[0, 4.0], [10, 2.0], [20, 2.0]])
    2.5
    """
    pts = sorted((float(s), float(v)) for s, v in points)
    if not pts:
        raise SpectrumKDError("an empty curve has no area")
    if len(pts) == 1 or pts[-1][0] == pts[0][0]:
        return pts[-1][1]
    steps, values = np.array(pts).T
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


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
