"""The KD objective against a sparse teacher: top-k token ids and log-probabilities per position.

This is the format a teacher-logit cache stores: for each position, the teacher's k most probable
token ids and their log-probabilities **at temperature 1** (``log softmax(teacher_logits)``), and
optionally the log of the teacher's mass outside them (the cache stores it, exact, from the full
logits; otherwise it is ``log(1 − Σ_S p)``).

The tail bucket — the choice, and why. Both distributions are taken over k + 1 outcomes: the k
cached ids S and one *tail* outcome for everything else. At τ = 1 the teacher's buckets are
``(p_S, 1 − p(S))`` and the student's are ``(q_S, q(V∖S))`` from its **full** softmax (the tail
summed directly from the logits in the pass that computes the CE, so it costs one more reduction,
not a vocabulary-sized tensor), and D is any of the six divergences over these k + 1 buckets. The
KD term therefore sees — and pushes down — every bit of student mass that leaves the teacher's
top-k, which the earlier choice (both distributions conditioned on S) never did: the student's
tail was free, so cached KD flattened it (entropy +0.9 nats on the demo). Measured on a toy
(64 positions, V = 256, teacher logits ~ N(0, 3²), top-16 cached, pure fkl, Adam, 400 steps;
``benchmarks/bench_sparse_tail.py``): the full-vocabulary KL(teacher‖student) falls from 3.05 to
0.15 nats (0.05 of its start; what is left is the tail's shape, which no cache of k ids can give)
with the bucket, against 2.30 (0.75) conditioned on S; the student's mass on S ends within 1e-4 of
the teacher's (0.82 away conditioned on S). Importance-sampled targets (Anshumann et al. 2025:
16 ids drawn from the teacher, weighted by frequency, full student softmax) are unbiased over
fresh draws, but a cache draws once: on the same toy they end at 0.65 of the start KL (0.058 off
on S), at τ = 2 above it. Dense KD reaches 0.0003. TRL's distillation trainer keeps the same kind
of tail bucket beside its top-k.

What is exact and what is not:

- τ = 1: exact for the coarse-grained distributions (S's ids and one tail outcome). For ``fkl``
  this is a lower bound of the full KL that equals it when the student's tail has the teacher's
  *shape*; the shape inside the tail is not constrained by cached targets (only its mass is).
- τ ≠ 1: both (k + 1)-bucket distributions are re-tempered as if the tail were one token:
  ``softmax(log b / τ)`` for b = the teacher's, resp. the student's τ = 1 buckets. Within S this is
  exact for both models (the τ-tempered teacher and student conditioned on S). The split between
  S and the tail is an approximation: a tempered distribution's true tail mass is
  ``Σ_{v∉S} p_v^{1/τ} / Z``, which cached values cannot give; for τ > 1 the bucket understates it.
  The student's tail is tempered the same way, so the divergence is still 0 exactly when the
  student's τ = 1 buckets equal the teacher's, and the minimiser is the right one.
- k = V (any order of ids): there is no tail, and the objective is the dense one, exactly.
- The teacher's tail log-mass is floored at ``log(2⁻²³)`` (float32's resolution of ``1 − Σ p``),
  so ``rkl``/``srkl``/``tvd`` stay finite when the top-k sums to 1 in float32.

Cost: the CE, the k gathered student logits and the student's tail come from one pass over V with
an analytic backward (:func:`spectrumkd.losses.cross_entropy.ce_gather_tail`); everything else works
on ``(..., k + 1)`` tensors, so a cached KD step costs about what an SFT step costs.

Not here: building or storing the cache (the trainer's teacher cache does; :func:`topk_teacher`
makes the targets from dense logits, :func:`teacher_tail` their tail). Ids within one position must
be distinct; entries whose teacher log-probability is −inf (padding) are outside S for both
models (their student mass counts in the tail).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError
from spectrumkd.losses.cross_entropy import ce_and_gather, ce_gather_tail
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


TAILS = ("bucket", "none")
"""How the KD term treats the teacher's mass outside its top-k: a tail bucket, or none (both
distributions conditioned on S — biased, kept for comparison)."""
TAIL_FLOOR_LOG = math.log(2.0**-23)
"""The floor of the teacher's tail log-mass (float32's resolution of ``1 − Σ p``)."""


def teacher_tail(teacher_logits: Tensor, ids: Tensor) -> Tensor:
    """The teacher's log-mass outside ``ids`` at τ = 1: ``logsumexp`` of its log-probs off them.

    Shapes ``(..., V)``, ``(..., k)`` → ``(...)`` float32, summed directly from the logits (what the
    teacher cache stores beside :func:`topk_teacher`). End point: ids covering V → −inf.

    >>> t = torch.tensor([[0.0, 2.0, 1.0]])
    >>> ids, _ = topk_teacher(t, 2)
    >>> bool(torch.allclose(teacher_tail(t, ids).exp(), torch.softmax(t, -1)[:, 0]))
    True
    """
    lp = _log_probs(teacher_logits.detach(), 1.0)
    return lp.scatter(-1, ids, -math.inf).logsumexp(-1)


def _teacher_buckets(logprobs: Tensor, tail: Tensor | None) -> Tensor:
    """``(..., k + 1)`` τ = 1 log-probabilities: the k cached entries, then the tail (floored)."""
    if tail is None:  # 1 − Σ_S p, from the cached values
        tail = torch.log1p(-logprobs.logsumexp(-1).clamp(max=0.0).exp())
    tail = tail.to(logprobs.dtype).clamp(min=TAIL_FLOOR_LOG)
    return torch.cat([logprobs, tail.unsqueeze(-1)], dim=-1)


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
    teacher_tail: Tensor | None = None,
    tail: str = "bucket",
    objective: KDObjective | None = None,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    **fields: Any,
) -> KDLoss:
    """:func:`~spectrumkd.losses.kd_loss` with the teacher given as top-k ids and τ = 1 log-probs.

    ``total = [ce_weight·Σ_t CE_t + (1−ce_weight)·τ²·Σ_t D(p̂_t, q̂_t)] / n`` over tokens with
    label ≠ ``ignore_index``. With ``tail="bucket"`` (the default) p̂ and q̂ are distributions over
    the k ids and one tail outcome: ``p̂ = softmax([teacher_logprobs, log tail] / τ)`` with the
    tail ``teacher_tail`` ``(...)`` if given (the cache's exact value, :func:`teacher_tail`), else
    ``log(1 − Σ p)``; ``q̂ = softmax([z_S, logsumexp(z_{V∖S})] / τ)`` from the student's full logits
    (see the module docstring for what is exact at τ ≠ 1). ``tail="none"`` conditions both on
    the k ids instead (the student's mass outside them is then unconstrained by the KD term).
    CE uses the full, raw student logits. The objective is ``objective=KDObjective(...)`` or its
    fields as keywords, as in :func:`~spectrumkd.losses.kd_loss`.

    Shapes: ``student_logits (..., V)``, ``teacher_ids (..., k)`` int64 (distinct per position),
    ``teacher_logprobs (..., k)`` (−inf allowed for padding), ``labels (...)`` aligned. Reference:
    top-k logit distillation; Anshumann et al. 2025 "Sparse logit sampling" on the bias of
    dropping the tail. End points: k = V equals the dense :func:`~spectrumkd.losses.kd_loss`
    exactly; all tokens masked → 0.

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
    if tail not in TAILS:
        raise SpectrumKDError(f"sparse_kd_loss: tail must be one of {TAILS}, got {tail!r}")
    if teacher_tail is not None and teacher_tail.shape != labels.shape:
        raise SpectrumKDError(
            f"teacher_tail {tuple(teacher_tail.shape)} must have the labels' shape {tuple(labels.shape)}"
        )
    mask = labels != ignore_index  # (...)
    den, count = token_denominator(mask, num_tokens)
    # k = V leaves no tail: the bucket objective is then the dense one, exactly.
    bucket = obj.kd_active and tail == "bucket" and teacher_ids.shape[-1] < student_logits.shape[-1]
    padded = teacher_logprobs == -math.inf
    # One pass over V gives the CE, the k gathered student logits and (bucket) the student's tail
    # (analytic backward: the (..., V) gradient is the only vocabulary-sized buffer).
    if bucket:  # a padding entry is outside S: point it at the position's top id (a repeat)
        top = teacher_ids.gather(-1, teacher_logprobs.argmax(-1, keepdim=True))
        ce_tok, z_s, lse_tail = ce_gather_tail(student_logits, labels, mask, torch.where(padded, top, teacher_ids))
    else:
        ce_tok, z_s = ce_and_gather(student_logits, labels, mask, teacher_ids if obj.kd_active else None)
    ce_sum = ce_tok.sum()
    if obj.weights()[0] == 0.0:  # pure KD: CE is only logged
        ce_sum = ce_sum.detach()
    if not obj.kd_active:
        return combine(ce_sum, ce_sum.new_zeros(()), den, count, obj)  # plain SFT
    assert z_s is not None  # (..., k), float32
    # A −inf teacher entry (padding of a short row) is outside the support for the student too.
    z_s = torch.where(padded, -math.inf, z_s)
    log_p = teacher_logprobs.detach()
    if bucket:
        z_s = torch.cat([z_s, lse_tail.unsqueeze(-1)], dim=-1)  # (..., k + 1) student buckets
        log_p = _teacher_buckets(log_p, None if teacher_tail is None else teacher_tail.detach())
    tau = obj.temperature
    log_q = _log_probs(z_s, tau)
    log_p = retemper(log_p, tau)
    d_tok = divergence_from_log_probs(
        obj.divergence, log_q, log_p, skew=obj.skew, teacher_weight=obj.teacher_weight
    )
    return combine(ce_sum, masked_sum(d_tok, mask), den, count, obj)
