"""The KD objective against a sparse teacher: top-k token ids and log-probabilities per position.

This is the format a teacher-logit cache stores: for each position, the teacher's k most probable
token ids and their log-probabilities **at temperature 1** (``log softmax(teacher_logits)``).

Missing tail mass — the choice, and why. The teacher's mass outside its top-k set S is unknown
(only its total at τ = 1, and not how it re-tempers), so both distributions are taken *conditioned
on S*: ``p̃ = softmax(log p_S / τ)`` and ``q̃ = softmax(student_logits_S / τ)``, renormalised over the
k ids, and D(p̃, q̃) is any of the six divergences. Reasons: (1) re-tempering is exact —
``softmax(log p_S / τ)`` over S is precisely the τ-tempered teacher conditioned on S, whereas a tail
bucket's tempered mass cannot be known from cached values; (2) every divergence stays finite
(a zero-mass teacher tail would make ``rkl``/``srkl``/``tvd`` against a full student ill-posed);
(3) with k = V (any order of ids) it *is* the dense objective, exactly. Cost of the choice: the KD
term does not see the student's mass outside S (for ``fkl`` the full-vocabulary student version
differs by −log q(S)); the CE term, computed on the full student logits, still does.

Cost: the CE and the k gathered student logits come from one ``logsumexp`` over V with an
analytic backward (:func:`spectrumkd.losses.cross_entropy.ce_and_gather`); everything else works
on ``(..., k)`` tensors, so a cached KD step costs about what an SFT step costs.

Not here: building or storing the cache (the trainer's teacher cache does; :func:`topk_teacher`
makes the targets from dense logits). Ids within one position must be distinct; entries whose
teacher log-probability is −inf (padding) are outside the support for both models.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError
from spectrumkd.losses.cross_entropy import ce_and_gather
from spectrumkd.losses.divergences import _log_probs, divergence_from_log_probs
from spectrumkd.losses.objective import KDObjective, objective_from
from spectrumkd.losses.reduction import (
    KDLoss,
    check_aligned,
    combine,
    masked_sum,
    token_denominator,
)


def topk_teacher(teacher_logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The cache format: ``(ids (..., k) int64, logprobs (..., k) float32)`` at temperature 1.

    ``logprobs = log_softmax(teacher_logits.float())`` at the k largest entries, in decreasing order.
    End point: k = V returns every id (a permutation of the vocabulary).

    >>> ids, lp = topk_teacher(torch.tensor([[0.0, 2.0, 1.0]]), 2)
    >>> ids.tolist()
    [[1, 2]]
    """
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise SpectrumKDError(f"k must be in [1, {teacher_logits.shape[-1]}], got {k}")
    logprobs, ids = _log_probs(teacher_logits.detach(), 1.0).topk(k, dim=-1)
    return ids, logprobs


def retemper(logprobs: Tensor, temperature: float) -> Tensor:
    """Re-temper cached τ = 1 log-probabilities over their support: ``log softmax(logprobs / τ)``.

    Shapes ``(..., k)`` → ``(..., k)``, float32. Exact for the teacher conditioned on the support,
    since ``log p_v = z_v − logsumexp(z)`` and the constant cancels in the softmax. End point: τ = 1
    renormalises (a no-op when the support holds all the mass). −inf entries (padding) stay −inf.

    >>> lp = torch.log_softmax(torch.tensor([1.0, 3.0, 0.0]), -1)
    >>> bool(torch.allclose(retemper(lp, 2.0), torch.log_softmax(torch.tensor([1.0, 3.0, 0.0]) / 2, -1)))
    True
    """
    tau = KDObjective(temperature=temperature).temperature  # the one check of τ
    return _log_probs(logprobs, tau)


def sparse_kd_loss(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    labels: Tensor,
    *,
    objective: KDObjective | None = None,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    **fields: Any,
) -> KDLoss:
    """:func:`~spectrumkd.losses.kd_loss` with the teacher given as top-k ids and τ = 1 log-probs.

    ``total = [ce_weight·Σ_t CE_t + (1−ce_weight)·τ²·Σ_t D(p̃_t, q̃_t)] / n`` over tokens with
    label ≠ ``ignore_index``; ``p̃ = softmax(teacher_logprobs / τ)`` and ``q̃ = softmax(student_logits
    gathered at teacher_ids / τ)``, both over the k ids (see the module docstring for why the tail is
    handled by conditioning on the support). CE uses the full, raw student logits. The objective is
    ``objective=KDObjective(...)`` or its fields as keywords, as in :func:`~spectrumkd.losses.kd_loss`.

    Shapes: ``student_logits (..., V)``, ``teacher_ids (..., k)`` int64 (distinct per position),
    ``teacher_logprobs (..., k)`` (−inf allowed for padding), ``labels (...)`` aligned. Reference:
    top-k logit distillation, cf. Anshumann et al. 2025 "Sparse logit sampling" on its bias.
    End points: k = V equals the dense :func:`~spectrumkd.losses.kd_loss` exactly; k = 1 makes every
    divergence 0 (one-point distributions); all tokens masked → 0.

    >>> g = torch.Generator().manual_seed(0)
    >>> s, t = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    >>> y = torch.tensor([0, 1, 2])
    >>> from spectrumkd.losses import kd_loss
    >>> a = sparse_kd_loss(s, *topk_teacher(t, 6), y, divergence="rkl", temperature=2.0).total
    >>> bool(torch.allclose(a, kd_loss(s, t, y, divergence="rkl", temperature=2.0).total))
    True
    """
    obj = objective_from(objective, fields, "sparse_kd_loss")
    check_aligned(student_logits.shape[:-1], labels)
    if teacher_ids.shape != teacher_logprobs.shape or teacher_ids.shape[:-1] != labels.shape:
        raise SpectrumKDError(
            f"teacher ids {tuple(teacher_ids.shape)} and log-probs {tuple(teacher_logprobs.shape)} "
            f"must both be (*labels.shape, k) with labels {tuple(labels.shape)}"
        )
    mask = labels != ignore_index  # (...)
    den, count = token_denominator(mask, num_tokens)
    # One logsumexp over V gives the CE; the KD term needs only the k gathered student logits
    # (analytic backward: the (..., V) gradient is the only vocabulary-sized buffer).
    ids = teacher_ids if obj.kd_active else None
    ce_tok, z_s = ce_and_gather(student_logits, labels, mask, ids)
    ce_sum = ce_tok.sum()
    if obj.weights()[0] == 0.0:  # pure KD: CE is only logged
        ce_sum = ce_sum.detach()
    if not obj.kd_active:
        return combine(ce_sum, ce_sum.new_zeros(()), den, count, obj)  # plain SFT
    assert z_s is not None  # (..., k), float32
    # A −inf teacher entry (padding of a short row) is outside the support for the student too.
    z_s = torch.where(teacher_logprobs == -math.inf, -math.inf, z_s)
    tau = obj.temperature
    log_q = _log_probs(z_s, tau)
    log_p = retemper(teacher_logprobs.detach(), tau)
    d_tok = divergence_from_log_probs(
        obj.divergence, log_q, log_p, skew=obj.skew, teacher_weight=obj.teacher_weight
    )
    return combine(ce_sum, masked_sum(d_tok, mask), den, count, obj)
