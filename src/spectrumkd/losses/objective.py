"""The KD objective: ``ce_weight·CE + (1−ce_weight)·τ²·D``, masked and normalised by a token count.

One reduction for every path (dense here, chunked/fused in :mod:`.chunked`, sparse in :mod:`.sparse`):
per-token CE (on the *raw*, untempered student logits) and per-token divergence D (:mod:`.divergences`,
both distributions at temperature τ) are summed over the positions whose label ≠ ``ignore_index`` and
divided by ``num_tokens`` — the count over the whole gradient-accumulation window and all processes,
which the caller passes so that the gradient does not depend on how a batch is split — or by the
local count when it is not given. The τ² factor keeps the KD gradient's scale independent of τ
(Hinton et al. 2015); the paper's α is ``ce_weight`` (0.3 off-policy, 0 on-policy; paper eq. 1/7).

Labels are aligned with the logits position by position: the caller shifts (as TRL's
``generalized_jsd_loss`` expects). Teacher logits are constants: no gradient flows into them.

Not here: on-policy sampling, teacher caching, vocabulary slicing (:mod:`.vocab`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError
from spectrumkd.losses.cross_entropy import ce_and_gather
from spectrumkd.losses.divergences import DIVERGENCES, _check, _log_probs, divergence_from_log_probs


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


@dataclass(frozen=True)
class Preset:
    """Named KD settings after an anchor paper; pass ``**preset.kwargs()`` to :func:`kd_loss`."""

    divergence: str
    ce_weight: float
    skew: float = 0.1
    teacher_weight: float = 0.5
    reference: str = ""

    def kwargs(self) -> dict[str, object]:
        """The keyword arguments of :func:`kd_loss` that this preset fixes."""
        return {
            "divergence": self.divergence,
            "ce_weight": self.ce_weight,
            "skew": self.skew,
            "teacher_weight": self.teacher_weight,
        }


def preset(name: str) -> Preset:
    """Settings named after the anchors (a fresh object each call; no global mutable state).

    - ``kd``: fkl, ce_weight 0.3 — Hinton et al. 2015 with the paper's off-policy α = 0.3.
    - ``minillm``: rkl, ce_weight 0.3 — Gu et al. 2023, token-level reverse KL as in the paper's
      RKL baseline (MiniLLM's full method is a policy gradient, not reproduced here).
    - ``gkd``: jsd with β = 0.5, ce_weight 0 — Agarwal et al. 2024 (TRL ``GKDTrainer`` default β;
      on-policy, so the paper's α = 0).
    - ``distillm``: skl with skew 0.1, ce_weight 0.3 — Ko et al. 2024 (their α = 0.1).
    - ``distillm-srkl``: srkl with skew 0.1, ce_weight 0.3 — Ko et al. 2024.
    - ``distillm-jsd``: jsd as DistiLLM's ``finetune.py`` calls it, ``js_distance(...)`` with its
      default ``lam = 0.9``: mixture m = (1 − lam)·p + lam·q = 0.1·p + 0.9·q and value
      lam·KL(q‖m) + (1 − lam)·KL(p‖m), i.e. β = ``teacher_weight`` = 1 − lam = 0.1 in TRL's
      convention (jongwooko/distillm ``distillm/losses.py`` L32–52, ``finetune.py`` L184); tested
      against that formula in ``tests/losses/test_conventions.py``.
    - ``tvd``: tvd, ce_weight 0.3 — Wen et al. 2023.

    The conventions of each anchor (τ², CE form, β/λ/skew names, normalisation, CE mix) are
    tabulated in ``docs/losses.md``.

    >>> preset("distillm-jsd").teacher_weight
    0.1
    """
    table = {
        "kd": Preset("fkl", 0.3, reference="Hinton et al. 2015"),
        "minillm": Preset("rkl", 0.3, reference="Gu et al. 2023 (MiniLLM)"),
        "gkd": Preset("jsd", 0.0, teacher_weight=0.5, reference="Agarwal et al. 2024 (GKD)"),
        "distillm": Preset("skl", 0.3, skew=0.1, reference="Ko et al. 2024 (DistiLLM)"),
        "distillm-srkl": Preset("srkl", 0.3, skew=0.1, reference="Ko et al. 2024 (DistiLLM)"),
        "distillm-jsd": Preset(
            "jsd", 0.3, teacher_weight=0.1, reference="Ko et al. 2024 (DistiLLM js_distance, lam=0.9)"
        ),
        "tvd": Preset("tvd", 0.3, reference="Wen et al. 2023"),
    }
    if name not in table:
        raise SpectrumKDError(f"unknown KD preset {name!r}; expected one of {', '.join(table)}")
    return table[name]


def check_objective_args(
    divergence: str, temperature: float, ce_weight: float, skew: float, teacher_weight: float
) -> bool:
    """Validate the shared arguments; return True when the KD term is active."""
    if divergence != "none" and divergence not in DIVERGENCES:
        raise SpectrumKDError(
            f"unknown divergence {divergence!r}; expected one of none, {', '.join(DIVERGENCES)}"
        )
    if not 0.0 <= ce_weight <= 1.0:
        raise SpectrumKDError(f"ce_weight must be in [0, 1], got {ce_weight}")
    if not temperature > 0:
        raise SpectrumKDError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= skew <= 1.0:
        raise SpectrumKDError(f"skew must be in [0, 1], got {skew}")
    if not 0.0 <= teacher_weight <= 1.0:
        raise SpectrumKDError(f"teacher_weight (β) must be in [0, 1], got {teacher_weight}")
    return divergence != "none" and ce_weight < 1.0


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


def combine(
    ce_sum: Tensor,
    kd_sum: Tensor,
    den: Tensor,
    count: int | Tensor,
    ce_weight: float,
    temperature: float,
) -> KDLoss:
    """Weight and normalise summed parts into a :class:`KDLoss`."""
    ce = ce_sum / den
    kd = kd_sum / den
    total = ce_weight * ce + (1.0 - ce_weight) * temperature**2 * kd
    return KDLoss(total=total, ce=ce.detach(), kd=kd.detach(), num_tokens=count)


def _flatten(student_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if student_logits.shape[:-1] != labels.shape:
        raise SpectrumKDError(
            f"labels {tuple(labels.shape)} do not match the logits' positions "
            f"{tuple(student_logits.shape[:-1])}; labels must be aligned (already shifted)"
        )
    return student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    divergence: str = "fkl",
    temperature: float = 1.0,
    ce_weight: float = 0.3,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    skew: float = 0.1,
    teacher_weight: float = 0.5,
    chunk_size: int | None = None,
) -> KDLoss:
    """The paper's objective (eq. 1): ``ce_weight·CE + (1−ce_weight)·τ²·D``, token-normalised.

    ``total = [ce_weight·Σ_t CE_t + (1−ce_weight)·τ²·Σ_t D_t] / n`` over tokens t with
    ``labels[t] != ignore_index``, where ``CE_t = −log softmax(student_logits_t)[labels_t]`` (raw
    logits, τ = 1), ``D_t = divergence(divergence, student_t, teacher_t, temperature=τ, ...)`` and
    ``n = num_tokens`` (global count over accumulation steps and processes) or the local count.

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
    """
    kd_active = check_objective_args(divergence, temperature, ce_weight, skew, teacher_weight)
    ce_weight = ce_weight if kd_active else 1.0  # no KD term: plain SFT
    if kd_active and teacher_logits is None:
        raise SpectrumKDError(f"divergence {divergence!r} with ce_weight < 1 needs teacher_logits")
    if chunk_size is not None:
        from spectrumkd.losses.chunked import chunked_kd_loss

        return chunked_kd_loss(
            student_logits, teacher_logits, labels, divergence=divergence, temperature=temperature,
            ce_weight=ce_weight, num_tokens=num_tokens, ignore_index=ignore_index, skew=skew,
            teacher_weight=teacher_weight, chunk_size=chunk_size,
        )  # fmt: skip
    if not kd_active:  # plain SFT: one logsumexp, analytic gradient, no (..., V) copies
        if student_logits.shape[:-1] != labels.shape:
            _flatten(student_logits, labels)  # raises the shape error
        sft_mask = labels != ignore_index
        den, count = token_denominator(sft_mask, num_tokens)
        ce_sum = ce_and_gather(student_logits, labels, sft_mask)[0].sum()
        return combine(ce_sum, ce_sum.new_zeros(()), den, count, 1.0, temperature)
    z, y = _flatten(student_logits, labels)  # (N, V), (N,)
    mask = y != ignore_index
    den, count = token_denominator(mask, num_tokens)
    safe_y = torch.where(mask, y, 0).unsqueeze(-1)  # (N, 1)

    # CE is only logged when ce_weight = 0: keep it out of the graph unless the KD term reuses it.
    with torch.set_grad_enabled(torch.is_grad_enabled() and (ce_weight > 0 or temperature == 1.0)):
        log_q1 = _log_probs(z, 1.0)  # (N, V): raw-logit log-probs for CE
    ce_tok = torch.where(mask, -log_q1.gather(-1, safe_y).squeeze(-1), 0.0)
    if ce_weight == 0.0:
        ce_tok = ce_tok.detach()
    ce_sum = ce_tok.sum()
    if not kd_active:
        return combine(ce_sum, ce_sum.new_zeros(()), den, count, 1.0, temperature)  # plain SFT

    assert teacher_logits is not None
    _check(student_logits, teacher_logits, temperature, skew, teacher_weight)
    t = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
    log_q = log_q1 if temperature == 1.0 else _log_probs(z, temperature)
    log_p = _log_probs(t, temperature)
    d_tok = divergence_from_log_probs(
        divergence, log_q, log_p, skew=skew, teacher_weight=teacher_weight
    )
    kd_sum = torch.where(mask, d_tok, 0.0).sum()
    return combine(ce_sum, kd_sum, den, count, ce_weight, temperature)
