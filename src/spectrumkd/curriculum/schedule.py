"""The sliding-window schedule: which window start ``w`` each epoch uses (paper §3.3, Algorithm 1).

With warm-up ``k`` and ``n`` epochs (docs/design.md §5): epochs ``1..k+1`` use ``w = 0``, epoch ``n``
uses ``w = n_early``, and ``n ≥ k + 2`` is required. ``td(w)`` is the total difficulty of the
window ``[w, w + M)`` of the sorted spectrum; it never decreases with ``w``.

- ``adaptive`` (default): epoch ``j ∈ [k+2, n)`` targets
  ``td(0) + (j − k − 1)·(td(n_early) − td(0))/(n − k − 1)`` and takes the ``w`` whose ``td(w)``
  is closest; ties go to the smaller ``w``. This is the paper's "difficulty increment as close as
  possible to Δavg", computed against the *cumulative* target. Algorithm 1's greedy ``while`` loop
  instead adds shifts until the per-epoch increment exceeds Δavg, which accumulates overshoot and
  can run past ``n_early`` before the last epoch; the cumulative target cannot.
- ``linear``: ``w_j = round_half_up((j − k − 1)·n_early/(n − k − 1))``.
- ``reverse`` direction (an ablation): start at ``w = n_early`` and slide to ``0`` by the same
  rules (the adaptive target interpolates from ``td(n_early)`` down to ``td(0)``).

The computation is O(n_early + epochs·log n_early) after the cumulative sum, so 10^6 examples plan
in well under a second.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.spectrum import Spectrum

__all__ = ["STEPS", "DIRECTIONS", "window_starts"]

STEPS = ("adaptive", "linear")
DIRECTIONS = ("forward", "reverse")


def _check(epochs: int, warmup: int, step: str, direction: str) -> None:
    if step not in STEPS:
        raise SpectrumKDError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    if direction not in DIRECTIONS:
        raise SpectrumKDError(
            f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}"
        )
    if warmup < 0:
        raise SpectrumKDError(f"warm-up epochs must be ≥ 0, got {warmup}")
    if epochs < warmup + 2:
        raise SpectrumKDError(
            f"a sliding schedule needs epochs ≥ warm-up + 2 (got epochs={epochs}, "
            f"warm-up={warmup}): the first post-warm-up epoch and the last must differ"
        )


def _closest(td: np.ndarray, target: float) -> int:
    """Smallest index whose value is closest to ``target`` in the non-decreasing array ``td``."""
    i = int(np.searchsorted(td, target, side="left"))
    candidates = [c for c in (i - 1, i) if 0 <= c < len(td)]
    best = min(candidates, key=lambda c: (abs(td[c] - target), c))
    # On a plateau of equal td values the first of them is the smaller w.
    return int(np.searchsorted(td, td[best], side="left"))


def window_starts(
    spectrum: Spectrum,
    epochs: int,
    warmup: int = 5,
    *,
    step: str = "adaptive",
    direction: str = "forward",
) -> list[int]:
    """Window start (sorted position) for each epoch ``1..epochs``.

    Hand-worked: scores 1..20, λa = λb = 0.1 (n_early = 2, M = 16), 6 epochs, 1 warm-up.
    ``td(0) = 136, td(1) = 152, td(2) = 168``; epochs 3, 4, 5 target 144, 152, 160: 144 is a tie
    between w=0 and w=1 (→ 0), 152 is w=1, 160 ties w=1 and w=2 (→ 1). In reverse the targets
    are 160, 152, 144, and the same tie rule gives 1, 1, 0.

    >>> from spectrumkd.curriculum.spectrum import build_spectrum
    >>> s = build_spectrum(list(range(20)), list(range(1, 21)), 0.1, 0.1)
    >>> window_starts(s, 6, 1)
    [0, 0, 0, 1, 1, 2]
    >>> window_starts(s, 6, 1, step="linear")
    [0, 0, 1, 1, 2, 2]
    >>> window_starts(s, 6, 1, direction="reverse")
    [2, 2, 1, 1, 0, 0]
    """
    _check(epochs, warmup, step, direction)
    n_early, k, n = spectrum.n_early, warmup, epochs
    span = n - k - 1
    starts: list[int] = []
    if step == "linear":
        for j in range(1, n + 1):
            t = max(0, j - k - 1)
            shift = int(Fraction(t * n_early, span) + Fraction(1, 2)) if n_early else 0
            starts.append(shift if direction == "forward" else n_early - shift)
        return starts
    td = spectrum.window_difficulties()
    first, last = (0, n_early) if direction == "forward" else (n_early, 0)
    for j in range(1, n + 1):
        if j <= k + 1:
            starts.append(first)
        elif j == n:
            starts.append(last)
        else:
            target = td[first] + (j - k - 1) * (td[last] - td[first]) / span
            starts.append(_closest(td, float(target)))
    return starts
