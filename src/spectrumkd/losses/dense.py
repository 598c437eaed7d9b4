"""The KD objective on full logits: :func:`kd_loss`, the public entry point of :mod:`spectrumkd.losses`.

``ce_weight·CE + (1−ce_weight)·τ²·D`` per token, reduced by :mod:`.reduction`: per-token CE (on the
*raw*, untempered student logits) and per-token divergence D (:mod:`.divergences`, both
distributions at temperature τ) summed over the positions whose label ≠ ``ignore_index`` and divided
by the caller's token count. The paper's α is ``ce_weight`` (0.3 off-policy, 0 on-policy; paper
eq. 1/7). Teacher logits are constants: no gradient flows into them. With ``chunk_size`` it hands
over to :func:`~spectrumkd.losses.chunked_kd_loss` (same value and gradients, far less memory).

Not here: on-policy sampling, teacher caching, vocabulary slicing (:mod:`.vocab`), the sparse
top-k teacher (:mod:`.sparse`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spectrumkd.losses.chunked import chunked_kd_loss
from spectrumkd.losses.cross_entropy import ce_and_gather
from spectrumkd.losses.divergences import _log_probs, check_same_vocab, divergence_from_log_probs
from spectrumkd.losses.objective import KDObjective, objective_from
from spectrumkd.losses.reduction import (
    KDLoss,
    check_aligned,
    check_teacher,
    combine,
    masked_sum,
    token_denominator,
)


def _sft_loss(
    student_logits: Tensor, labels: Tensor, obj: KDObjective, ignore_index: int,
    num_tokens: int | Tensor | None,
) -> KDLoss:  # fmt: skip
    """Plain SFT: one logsumexp, analytic gradient, no ``(..., V)`` copies of sliced logits."""
    mask = labels != ignore_index
    den, count = token_denominator(mask, num_tokens)
    ce_sum = ce_and_gather(student_logits, labels, mask)[0].sum()
    return combine(ce_sum, ce_sum.new_zeros(()), den, count, obj)


def _dense_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, obj: KDObjective,
    ignore_index: int, num_tokens: int | Tensor | None,
) -> KDLoss:  # fmt: skip
    """The KD objective through autograd, on checked inputs."""
    vocab, tau = student_logits.shape[-1], obj.temperature
    z, y = student_logits.reshape(-1, vocab), labels.reshape(-1)  # (N, V), (N,)
    mask = y != ignore_index
    den, count = token_denominator(mask, num_tokens)
    safe_y = torch.where(mask, y, 0).unsqueeze(-1)  # (N, 1)
    # CE is only logged when ce_weight = 0: keep it out of the graph unless the KD term reuses it.
    with torch.set_grad_enabled(torch.is_grad_enabled() and (obj.ce_weight > 0 or tau == 1.0)):
        log_q1 = _log_probs(z, 1.0)  # (N, V): raw-logit log-probs for CE
    ce_sum = masked_sum(-log_q1.gather(-1, safe_y).squeeze(-1), mask)
    if obj.ce_weight == 0.0:
        ce_sum = ce_sum.detach()
    t = teacher_logits.detach().reshape(-1, vocab)
    log_q = log_q1 if tau == 1.0 else _log_probs(z, tau)
    d_tok = divergence_from_log_probs(
        obj.divergence, log_q, _log_probs(t, tau), skew=obj.skew, teacher_weight=obj.teacher_weight
    )
    return combine(ce_sum, masked_sum(d_tok, mask), den, count, obj)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    objective: KDObjective | None = None,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    **fields: Any,
) -> KDLoss:
    """The paper's objective (eq. 1): ``ce_weight·CE + (1−ce_weight)·τ²·D``, token-normalised.

    ``total = [ce_weight·Σ_t CE_t + (1−ce_weight)·τ²·Σ_t D_t] / n`` over tokens t with
    ``labels[t] != ignore_index``, where ``CE_t = −log softmax(student_logits_t)[labels_t]`` (raw
    logits, τ = 1), ``D_t = divergence(divergence, student_t, teacher_t, temperature=τ, ...)`` and
    ``n = num_tokens`` (global count over accumulation steps and processes) or the local count.
    The objective is ``objective=KDObjective(...)`` or its fields as keywords: ``divergence``
    (``"fkl"``), ``temperature`` (1), ``ce_weight`` (0.3), ``skew`` (0.1), ``teacher_weight`` (0.5).

    Shapes: ``student_logits``/``teacher_logits`` ``(..., V)`` (same V: see
    :func:`spectrumkd.losses.shared_vocab_logits`), ``labels`` ``(...)`` aligned position by position
    (the caller shifts). Any float dtype in; math in float32. Reference: the SpectrumKD paper's
    eq. (1)/(7); Hinton et al. 2015 for τ².

    End points: all tokens masked → every part is 0 (never NaN); ``divergence="none"`` or
    ``ce_weight=1`` → plain SFT (``teacher_logits`` may be None; ``kd`` is 0); ``ce_weight=0`` →
    pure KD (``ce`` is still reported, detached); plain SFT runs on
    :func:`~spectrumkd.losses.cross_entropy.ce_and_gather` (one logsumexp, analytic gradient, no
    ``(..., V)`` copies of sliced logits). ``chunk_size`` (tokens per chunk) takes the chunked
    path (:func:`spectrumkd.losses.chunked_kd_loss`): same value and gradients, far less memory.
    Teacher logits get no gradient.

    >>> s = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])
    >>> out = kd_loss(s, s, torch.tensor([[0, -100]]), ce_weight=0.0)
    >>> float(out.total), int(out.num_tokens)
    (0.0, 1)
    >>> float(kd_loss(s, s, torch.tensor([[0, -100]]), objective=KDObjective(ce_weight=0.0)).total)
    0.0
    """
    obj = objective_from(objective, fields, "kd_loss")
    check_teacher(obj, teacher_logits is not None)
    if chunk_size is not None:
        return chunked_kd_loss(
            student_logits, teacher_logits, labels, objective=obj, num_tokens=num_tokens,
            ignore_index=ignore_index, chunk_size=chunk_size,
        )  # fmt: skip
    check_aligned(student_logits.shape[:-1], labels)
    if not obj.kd_active:
        return _sft_loss(student_logits, labels, obj, ignore_index, num_tokens)
    assert teacher_logits is not None
    check_same_vocab(student_logits, teacher_logits)
    return _dense_kd_loss(student_logits, teacher_logits, labels, obj, ignore_index, num_tokens)
