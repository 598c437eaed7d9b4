"""Per-example difficulty metrics computed on one padded batch (docs/design.md §4).

- ``ce``: token cross-entropy −log q(y_t | x, y_<t) over the response tokens (labels ≠ -100),
  ``mean`` (default) or ``sum`` per example.
- ``entropy``: the student's predictive entropy H(q(· | x, y_<t)) at the same positions, mean or sum.
- ``length``: the number of response tokens (EOS included), for TCL; needs no model.
- ``rougel``: 1 − ROUGE-L F (0–1) of the greedy answer against the references (see ``runner``).

The per-token values come from :func:`spectrumkd.evaluate.forced.row_sums`, the code path the
metric panel's held-out CE and entropy share: logits only at the positions that predict response
tokens (``logits_to_keep`` with the union of those positions in the batch), in float32, so the
model's own output head, soft-capping and scaling apply unchanged. What it does not do: batching,
distribution, files (``runner.py``).
torch is imported when a metric is computed, so the command line can list :data:`METRICS` and
:data:`REDUCTIONS` without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spectrumkd import SpectrumKDError

if TYPE_CHECKING:
    import torch

METRICS = ("ce", "entropy", "rougel", "length")
REDUCTIONS = ("mean", "sum")
IGNORE_INDEX = -100


def batch_scores(model, batch: dict[str, torch.Tensor], *, metric: str = "ce", reduction: str = "mean") -> torch.Tensor:
    """Per-example scores ``[B]`` (float64 on the CPU) of one collated batch.

    >>> from spectrumkd.models import tiny_random_model
    >>> from spectrumkd.data import Collator, Example
    >>> ex = Example(0, "", "", [], [5, 6, 7], [-100, 6, 7])
    >>> batch_scores(tiny_random_model(layers=1, hidden=32), Collator(1)([ex])).shape
    torch.Size([1])
    """
    import torch

    from spectrumkd.evaluate.forced import row_sums

    if reduction not in REDUCTIONS:
        raise SpectrumKDError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    counts = mask.sum(dim=1)
    if metric == "length":
        return counts.to(torch.float64).cpu()
    if metric not in ("ce", "entropy"):
        raise SpectrumKDError(f"metric {metric!r} is not a per-batch metric; use ce, entropy, length")
    totals = row_sums(model, batch, stats=(metric,))[metric].cpu()  # [B] float64
    if reduction == "mean":
        totals = totals / counts.clamp(min=1).to(torch.float64).cpu()
    return totals
