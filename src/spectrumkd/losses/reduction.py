"""The token reduction every KD path shares: masked sums, the token denominator, the weighted total.

Per-token CE and per-token divergence D are summed over the positions whose label ≠
``ignore_index`` and divided by ``num_tokens`` — the count over the whole gradient-accumulation window
and all processes, which the caller passes so that the gradient does not depend on how a batch is
split — or by the local count when it is not given (docs/design.md §6). The total is
``ce_weight·CE + (1−ce_weight)·τ²·D`` with the coefficients of
:meth:`~spectrumkd.losses.objective.KDObjective.weights`; the τ² factor keeps the KD gradient's
scale independent of τ (Hinton et al. 2015). Labels are aligned with the positions (the caller
shifts, as TRL's ``generalized_jsd_loss`` expects).

Also here: the shape checks of labels against positions, and the teacher-presence check.

Not here: the per-token formulas (:mod:`.divergences`), the paths that produce the sums (dense
:mod:`.dense`, chunked/fused :mod:`.chunked`, sparse :mod:`.sparse`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError
from spectrumkd.losses.objective import KDObjective


@dataclass(frozen=True)
class KDLoss:
    """Result of a KD objective.

    ``total`` is the differentiable loss ``ce_weight·ce + (1−ce_weight)·τ²·kd``. ``ce`` and ``kd``
    are the detached parts *before* weighting (``kd`` without τ²): Σ over unmasked tokens divided by
    ``num_tokens``. ``num_tokens`` is the count actually divided by (the caller's global count, or
    the local count as a 0-d tensor).
    """

    total: Tensor
    ce: Tensor
    kd: Tensor
    num_tokens: int | Tensor


def token_denominator(mask: Tensor, num_tokens: int | Tensor | None) -> tuple[Tensor, int | Tensor]:
    """``(denominator, count)``: the count divided by, clamped to ≥ 1 so that 0 tokens give 0, not NaN."""
    if num_tokens is None:
        count: int | Tensor = mask.sum()
    else:
        if isinstance(num_tokens, int) and num_tokens < 0:
            raise SpectrumKDError(f"num_tokens must be >= 0, got {num_tokens}")
        count = num_tokens
    den = torch.as_tensor(count, dtype=torch.float32, device=mask.device).clamp(min=1.0)
    return den, count


def masked_sum(values: Tensor, mask: Tensor | None) -> Tensor:
    """Σ of ``values`` where ``mask`` (all of them when ``mask`` is None); masked inf/NaN count 0."""
    return (values if mask is None else torch.where(mask, values, 0.0)).sum()


def weighted(
    ce_sum: Tensor, kd_sum: Tensor, den: Tensor, objective: KDObjective
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, ce, kd)`` from the summed parts: ``ce = Σ CE / den``, ``kd = Σ D / den``, and
    ``total = a·ce + b·kd`` with ``(a, b) = objective.weights()`` (``(1, 0)`` for plain SFT)."""
    ce, kd = ce_sum / den, kd_sum / den
    ce_w, kd_w = objective.weights()
    return ce_w * ce + kd_w * kd, ce, kd


def combine(
    ce_sum: Tensor, kd_sum: Tensor, den: Tensor, count: int | Tensor, objective: KDObjective
) -> KDLoss:
    """Weight and normalise summed parts into a :class:`KDLoss` (``ce`` and ``kd`` detached)."""
    total, ce, kd = weighted(ce_sum, kd_sum, den, objective)
    return KDLoss(total=total, ce=ce.detach(), kd=kd.detach(), num_tokens=count)


def check_aligned(positions: tuple[int, ...], labels: Tensor, what: str = "logits") -> None:
    """Raise unless ``labels`` has one entry per position (``positions`` = ``x.shape[:-1]``)."""
    if tuple(positions) != tuple(labels.shape):
        raise SpectrumKDError(
            f"labels {tuple(labels.shape)} do not match the {what}' positions "
            f"{tuple(positions)}; labels must be aligned (already shifted)"
        )


def check_teacher(objective: KDObjective, present: bool, needs: str = "teacher_logits") -> None:
    """Raise when the KD term is active but the teacher input (``needs``) is missing."""
    if objective.kd_active and not present:
        raise SpectrumKDError(
            f"divergence {objective.divergence!r} with ce_weight < 1 needs {needs}"
        )
