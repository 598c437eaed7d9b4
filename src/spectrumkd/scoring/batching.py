"""Group examples into batches under a padded-token budget, bucketed by length or in dataset order.

Bucketed: indices sorted by length, longest first (ties by index), filled greedily while
``rows × longest ≤ batch_tokens``; the longest batch runs first so memory problems show at once.
Naive: the same budget in dataset order (the baseline the benchmark compares against). A single
example longer than the budget forms a batch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence


def make_batches(lengths: Sequence[int], batch_tokens: int, *, bucket: bool = True) -> list[list[int]]:
    """Batches of indices into ``lengths`` whose padded size ``rows × max length`` ≤ ``batch_tokens``.

    >>> make_batches([3, 9, 4, 8], 16)
    [[1], [3, 2], [0]]
    >>> make_batches([3, 9, 4, 8], 16, bucket=False)
    [[0], [1], [2, 3]]
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if bucket else range(len(lengths))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Total tokens the batches process including padding: Σ rows × longest.

    >>> padded_tokens([3, 9, 4, 8], [[0], [1], [2, 3]])
    28
    """
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)
