"""Per-example difficulty metrics computed on one padded batch (DESIGN.md §4).

- ``ce``: token cross-entropy −log q(y_t | x, y_<t) over the response tokens (labels ≠ -100),
  ``mean`` (default) or ``sum`` per example.
- ``entropy``: the student's predictive entropy H(q(· | x, y_<t)) at the same positions, mean or sum.
- ``length``: the number of response tokens (EOS included), for TCL; needs no model.
- ``rougel``: 1 − ROUGE-L F (0–1) of the greedy answer against the references (see ``runner``).

Logits are computed only at the positions that predict response tokens (``logits_to_keep`` with the
union of those positions in the batch) and in float32, so the model's own output head, soft-capping
and scaling apply unchanged. What it does not do: batching, distribution, files (``runner.py``).
torch is imported when a metric is computed, so the command line can list :data:`METRICS` and
:data:`REDUCTIONS` without it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from spectrumkd import SpectrumKDError

if TYPE_CHECKING:
    import torch

METRICS = ("ce", "entropy", "rougel", "length")
REDUCTIONS = ("mean", "sum")
IGNORE_INDEX = -100


def _supports_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def response_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B, K, V] float32, targets [B, K])``: predictions for positions ``start..T-2``.

    ``targets`` are the shifted labels (-100 where nothing is predicted); ``start`` is the first
    position that predicts a response token anywhere in the batch.
    """
    import torch

    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    targets = labels[:, 1:]  # [B, T-1]: position t predicts token t+1
    active = (targets != IGNORE_INDEX).any(dim=0)
    if not bool(active.any()):
        raise SpectrumKDError("a batch has no response tokens to score")
    start = int(active.nonzero()[0])
    width = input_ids.shape[1]
    kwargs = {}
    if _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.arange(start, width - 1, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logits = out.logits
    if "logits_to_keep" not in kwargs:
        logits = logits[:, start : width - 1]
    return logits.float(), targets[:, start:]


def batch_scores(model, batch: dict[str, torch.Tensor], *, metric: str = "ce", reduction: str = "mean") -> torch.Tensor:
    """Per-example scores ``[B]`` (float64 on the CPU) of one collated batch.

    >>> from spectrumkd.models import tiny_random_model
    >>> from spectrumkd.data import Collator, Example
    >>> ex = Example(0, "", "", [], [5, 6, 7], [-100, 6, 7])
    >>> batch_scores(tiny_random_model(layers=1, hidden=32), Collator(1)([ex])).shape
    torch.Size([1])
    """
    import torch
    import torch.nn.functional as F

    if reduction not in REDUCTIONS:
        raise SpectrumKDError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    counts = mask.sum(dim=1)
    if metric == "length":
        return counts.to(torch.float64).cpu()
    if metric not in ("ce", "entropy"):
        raise SpectrumKDError(f"metric {metric!r} is not a per-batch metric; use ce, entropy, length")
    logits, targets = response_logits(model, batch)  # [B, K, V], [B, K]
    keep = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits[keep], dim=-1)  # [N, V] only response positions
    if metric == "ce":
        per_token = F.nll_loss(logprobs, targets[keep], reduction="none")  # [N]
    else:
        per_token = -(logprobs.exp() * logprobs).sum(dim=-1)  # [N]
    rows = keep.nonzero()[:, 0]
    totals = torch.zeros(keep.shape[0], dtype=torch.float64, device=per_token.device)
    totals.index_add_(0, rows, per_token.to(torch.float64))
    totals = totals.cpu()
    if reduction == "mean":
        totals = totals / counts.clamp(min=1).to(torch.float64).cpu()
    return totals
