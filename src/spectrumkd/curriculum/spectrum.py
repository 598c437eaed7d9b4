"""The difficulty spectrum: scores sorted ascending, split into four zones (paper §3.2).

``N`` examples are sorted by score with a *stable* sort (ties keep input order). With
``n_early = floor(λa·N)`` and ``n_excluded = floor(λb·N)`` (docs/design.md §5), the zones by sorted
position are Early ``[0, n_early)``, Continuous ``[n_early, N − n_excluded − n_early)``, Late
``[N − n_excluded − n_early, N − n_excluded)`` and Excluded ``[N − n_excluded, N)``; the sliding
window has size ``M = N − n_excluded − n_early``. The paper's constraint ``2λa + λb ≤ 1`` and
``M ≥ 1`` are enforced.

The floor uses a 1e-9 tolerance so that decimal λ count as typed: ``floor(0.29·100)`` is 29, not
the 28 that binary floating point gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.scores import validate_scores

__all__ = ["ZONES", "Spectrum", "build_spectrum", "floor_count", "check_lambda"]

ZONES = ("early", "continuous", "late", "excluded")


def floor_count(fraction: float, n: int) -> int:
    """``floor(fraction·n)`` with a 1e-9 tolerance against binary rounding.

    >>> floor_count(0.1, 20), floor_count(0.29, 100), floor_count(0.15, 7)
    (2, 29, 1)
    """
    return math.floor(fraction * n + 1e-9)


def check_lambda(name: str, value: float) -> float:
    """Raise unless ``0 ≤ value ≤ 1``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SpectrumKDError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Spectrum:
    """Examples sorted by difficulty and split into zones.

    ``ids`` and ``scores`` are in ascending difficulty order; ``order`` maps sorted position to
    input position.

    >>> s = build_spectrum(list("abcdefghij"), [5, 1, 3, 2, 9, 4, 8, 6, 7, 10], 0.1, 0.1)
    >>> s.ids
    ['b', 'd', 'c', 'f', 'a', 'h', 'i', 'g', 'e', 'j']
    >>> s.n_early, s.n_excluded, s.window_size
    (1, 1, 8)
    >>> s.zone_ids("late"), s.zone_ids("excluded")
    (['e'], ['j'])
    """

    ids: list
    scores: np.ndarray
    order: np.ndarray
    lambda_a: float
    lambda_b: float
    n_early: int
    n_excluded: int

    @property
    def n_total(self) -> int:
        return len(self.ids)

    @property
    def window_size(self) -> int:
        """M = N − n_excluded − n_early."""
        return self.n_total - self.n_excluded - self.n_early

    def zone_bounds(self) -> dict[str, tuple[int, int]]:
        """Half-open sorted-position ranges of the four zones."""
        n, e, x = self.n_total, self.n_early, self.n_excluded
        return {
            "early": (0, e),
            "continuous": (e, n - x - e),
            "late": (n - x - e, n - x),
            "excluded": (n - x, n),
        }

    def zone_ids(self, zone: str) -> list:
        lo, hi = self.zone_bounds()[zone]
        return self.ids[lo:hi]

    def zones(self) -> dict[str, list]:
        return {z: self.zone_ids(z) for z in ZONES}

    @cached_property
    def cumulative(self) -> np.ndarray:
        """``c[i]`` = sum of the ``i`` easiest scores (length N+1, float64)."""
        return np.concatenate(([0.0], np.cumsum(self.scores)))

    def window_difficulties(self) -> np.ndarray:
        """``td(w)`` for every window start ``w ∈ [0, n_early]`` (non-decreasing in ``w``)."""
        c, m = self.cumulative, self.window_size
        w = np.arange(self.n_early + 1)
        return c[w + m] - c[w]

    def range_difficulty(self, lo: int, hi: int) -> float:
        """Sum of the scores at sorted positions ``[lo, hi)``."""
        return float(self.cumulative[hi] - self.cumulative[lo])


def build_spectrum(ids: list, scores, lambda_a: float = 0.1, lambda_b: float = 0.1) -> Spectrum:
    """Sort examples ascending by score (stable) and compute the zone sizes.

    Raises :class:`SpectrumKDError` for λ outside [0, 1], ``2λa + λb > 1``, an empty window
    (``M < 1``), NaN/inf scores and duplicate ids.
    """
    ids = ids if isinstance(ids, list) else list(ids)
    arr = validate_scores(ids, scores)
    lambda_a = check_lambda("lambda_a", lambda_a)
    lambda_b = check_lambda("lambda_b", lambda_b)
    if 2 * lambda_a + lambda_b > 1 + 1e-12:
        raise SpectrumKDError(
            f"2·lambda_a + lambda_b must be ≤ 1 (got 2·{lambda_a} + {lambda_b} = "
            f"{2 * lambda_a + lambda_b:g})"
        )
    n = len(arr)
    n_early, n_excluded = floor_count(lambda_a, n), floor_count(lambda_b, n)
    if n - n_excluded - n_early < 1:
        raise SpectrumKDError(
            f"window size M = N − n_excluded − n_early = {n} − {n_excluded} − {n_early} is 0; "
            "lower lambda_a/lambda_b or score more examples"
        )
    order = np.argsort(arr, kind="stable")
    sorted_ids = np.array(ids, dtype=object)[order].tolist()
    return Spectrum(
        ids=sorted_ids,
        scores=arr[order],
        order=order,
        lambda_a=lambda_a,
        lambda_b=lambda_b,
        n_early=n_early,
        n_excluded=n_excluded,
    )
