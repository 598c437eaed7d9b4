"""Float64 reference for the KD divergences and objective (docs/design.md §6), written the plain way.

Probabilities, not log-probabilities: ``p = softmax(teacher/τ)``, ``q = softmax(student/τ)`` in
float64, KL via ``xlogy`` (so 0·log 0 = 0), mixtures formed directly as ``a·p + b·q``, and the
objective reduced by an explicit Python loop over tokens. Slow and memory-hungry on purpose: its
only job is to be obviously right. Used by ``tests/losses`` and ``benchmarks/bench_kd_loss.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _kl(a: Tensor, b: Tensor) -> Tensor:
    return (torch.xlogy(a, a) - torch.xlogy(a, b)).sum(-1)


def ref_divergence(
    name: str, student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0,
    skew: float = 0.1, teacher_weight: float = 0.5,
) -> Tensor:  # fmt: skip
    """Per-token divergence in float64, ``(..., V) → (...)``."""
    p = torch.softmax(teacher_logits.double() / temperature, -1)
    q = torch.softmax(student_logits.double() / temperature, -1)
    b, s = teacher_weight, skew
    if name == "fkl":
        return _kl(p, q)
    if name == "rkl":
        return _kl(q, p)
    if name == "jsd":
        if b == 0:
            return _kl(p, q)
        if b == 1:
            return _kl(q, p)
        m = b * p + (1 - b) * q
        return b * _kl(p, m) + (1 - b) * _kl(q, m)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skl":
        return _kl(p, s * p + (1 - s) * q)
    if name == "srkl":
        return _kl(q, (1 - s) * p + s * q)
    raise ValueError(name)


def ref_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, *, divergence: str = "fkl",
    temperature: float = 1.0, ce_weight: float = 0.3, num_tokens: int | None = None,
    ignore_index: int = -100, skew: float = 0.1, teacher_weight: float = 0.5,
) -> dict[str, Tensor]:  # fmt: skip
    """``ce_weight·CE + (1−ce_weight)·τ²·D`` summed over unmasked tokens / count, token by token."""
    z = student_logits.double().reshape(-1, student_logits.shape[-1])
    t = (
        None
        if teacher_logits is None
        else teacher_logits.double().reshape(-1, teacher_logits.shape[-1])
    )
    y = labels.reshape(-1).tolist()
    ce = z.new_zeros(())
    kd = z.new_zeros(())
    count = 0
    for i, label in enumerate(y):
        if label == ignore_index:
            continue
        count += 1
        ce = ce - torch.log(torch.softmax(z[i], -1)[label])
        if divergence != "none" and t is not None:
            kd = kd + ref_divergence(
                divergence,
                z[i],
                t[i],
                temperature=temperature,
                skew=skew,
                teacher_weight=teacher_weight,
            )
    if divergence == "none":
        ce_weight = 1.0  # no KD term: plain SFT
    n = num_tokens if num_tokens is not None else count
    n = max(n, 1)
    ce, kd = ce / n, kd / n
    total = ce_weight * ce + (1 - ce_weight) * temperature**2 * kd
    return {"total": total, "ce": ce, "kd": kd}


def ref_bucket_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, ids: Tensor, labels: Tensor, *,
    divergence: str = "fkl", temperature: float = 1.0, ce_weight: float = 0.3,
    skew: float = 0.1, teacher_weight: float = 0.5,
) -> dict[str, Tensor]:  # fmt: skip
    """The tail-bucket objective of cached top-k targets, the plain way, in float64.

    Per position: the τ = 1 probabilities of both models on the k ids ``ids`` and ``1 − Σ`` of them
    as one more outcome; the divergence of those (k + 1)-point distributions re-tempered as
    ``b^{1/τ} / Σ b^{1/τ}`` (the softmax of ``log b / τ``); CE on the full student logits.
    """
    z = student_logits.double().reshape(-1, student_logits.shape[-1])
    p = torch.softmax(teacher_logits.double().reshape(-1, z.shape[-1]), -1)
    q = torch.softmax(z, -1)
    ids2 = ids.reshape(-1, ids.shape[-1])
    p_b = torch.cat([p.gather(-1, ids2), 1 - p.gather(-1, ids2).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, ids2), 1 - q.gather(-1, ids2).sum(-1, keepdim=True)], -1)
    out = ref_kd_loss(q_b.log(), p_b.log(), labels.clamp(max=0).masked_fill(labels == -100, -100),
                      divergence=divergence, temperature=temperature, ce_weight=0.0, skew=skew,
                      teacher_weight=teacher_weight)  # fmt: skip
    ce = ref_kd_loss(student_logits, None, labels, divergence="none")["ce"]
    total = ce_weight * ce + (1 - ce_weight) * temperature**2 * out["kd"]
    return {"total": total, "ce": ce, "kd": out["kd"]}
