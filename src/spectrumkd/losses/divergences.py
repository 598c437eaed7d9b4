"""Per-token divergences between teacher and student next-token distributions.

Every function maps ``(..., V)`` logits to ``(...)`` values with one argument order,
``(student_logits, teacher_logits, *, temperature, ...)``. Notation (DESIGN.md §6):
``p = softmax(teacher_logits / τ)`` (teacher), ``q = softmax(student_logits / τ)`` (student), both
computed in float32 whatever the input dtype (float64 inputs stay float64, for gradcheck).

==========  =====================================================  ============================
name        per-token value                                        anchor
==========  =====================================================  ============================
``fkl``     KL(p‖q) = Σ p·(log p − log q)                          Hinton et al. 2015
``rkl``     KL(q‖p)                                                Gu et al. 2023 (MiniLLM)
``jsd``     β·KL(p‖m) + (1−β)·KL(q‖m), m = β·p + (1−β)·q          Agarwal et al. 2024 (GKD), TRL
``tvd``     ½·Σ |p − q|                                            Wen et al. 2023 (f-divergence)
``skl``     KL(p ‖ s·p + (1−s)·q)                                  Ko et al. 2024 (DistiLLM)
``srkl``    KL(q ‖ (1−s)·p + s·q)                                  Ko et al. 2024 (DistiLLM)
==========  =====================================================  ============================

β is ``teacher_weight`` in TRL's ``generalized_jsd_loss`` convention: β = 0 is *exactly* ``fkl`` and
β = 1 exactly ``rkl`` (the interior formula tends to 0 at both ends, so these are special cases, and
we say so rather than hide them). ``skew`` s = 0 gives the plain KL; s = 1 gives 0.

Numerics: mixtures are formed in log space (``logaddexp``); terms with a zero weight (``p = 0`` in
KL(p‖·)) count 0 via ``where`` on the inner difference, so −inf logits (masked vocabulary entries)
give neither NaN values nor NaN gradients. A KL is +inf, honestly, when its first argument has mass
where its second has none (e.g. ``fkl`` with a student logit of −inf where the teacher's is finite).

Also here: :func:`divergence_and_grad`, the same values plus their analytic gradient with respect to
the tempered student logits, used by the chunked and fused paths (:mod:`.chunked`) so that their
backward pass costs nothing extra (Liger-Kernel's chunked distillation losses do the same).

Not here: masking, token reduction, the τ² factor and the CE term (:mod:`.objective`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError

DIVERGENCES: tuple[str, ...] = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl")

# Log-probabilities are clamped to this floor only as *inputs of logaddexp*: where both sides are
# -inf the mixture weight of the term is 0 anyway, and a finite floor keeps logaddexp's gradient
# (exp(a - out)) from becoming exp(-inf + inf) = NaN. Any float32 log-probability below ~-104 has
# probability exactly 0, so the floor never changes a value.
_LOG_FLOOR = -1e30


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / τ) over the last dim, in float32 (float64 kept)."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    if temperature != 1.0:
        x = x / temperature
    return torch.log_softmax(x, dim=-1)


def _kl(log_a: Tensor, log_b: Tensor, a: Tensor | None = None) -> Tensor:
    """KL(a‖b) = Σ a·(log a − log b) from log-probabilities, with 0·log 0 = 0 (no NaN)."""
    if a is None:
        a = log_a.exp()
    # where() on the *difference* (not on the product) keeps -inf - -inf out of the gradient too.
    diff = torch.where(a > 0, log_a - log_b, 0.0)
    return (a * diff).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(w·a + (1−w)·b) in log space; exact at w ∈ {0, 1}."""
    if weight_a == 0.0:
        return log_b
    if weight_a == 1.0:
        return log_a
    return torch.logaddexp(
        log_a.clamp(min=_LOG_FLOOR) + math.log(weight_a),
        log_b.clamp(min=_LOG_FLOOR) + math.log1p(-weight_a),
    )


def _check(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    skew: float,
    teacher_weight: float,
) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise SpectrumKDError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; slice both to the shared tokenizer "
            "length with spectrumkd.losses.shared_vocab_logits"
        )
    if not temperature > 0:
        raise SpectrumKDError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= skew <= 1.0:
        raise SpectrumKDError(f"skew must be in [0, 1], got {skew}")
    if not 0.0 <= teacher_weight <= 1.0:
        raise SpectrumKDError(f"teacher_weight (β) must be in [0, 1], got {teacher_weight}")


def forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Forward KL, ``fkl``: KL(p‖q) = Σ_v p_v·(log p_v − log q_v), per token.

    Shapes: ``(..., V)`` logits → ``(...)``. p = softmax(teacher/τ), q = softmax(student/τ), float32.
    Reference: Hinton et al. 2015, "Distilling the knowledge in a neural network".
    End points: 0 iff p = q; +inf where q_v = 0 < p_v; entries with p_v = 0 contribute 0.

    >>> s = torch.tensor([[1.0, 2.0, 3.0]])
    >>> forward_kl(s, s).tolist()
    [0.0]
    """
    _check(student_logits, teacher_logits, temperature, 0.0, 0.5)
    return _kl(_log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature))


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Reverse KL, ``rkl``: KL(q‖p) = Σ_v q_v·(log q_v − log p_v), per token.

    Shapes: ``(..., V)`` → ``(...)``. Reference: Gu et al. 2023, "MiniLLM" (mode-seeking KD).
    End points: 0 iff p = q; +inf where p_v = 0 < q_v; entries with q_v = 0 contribute 0.

    >>> reverse_kl(torch.zeros(2, 4), torch.zeros(2, 4)).tolist()
    [0.0, 0.0]
    """
    _check(student_logits, teacher_logits, temperature, 0.0, 0.5)
    return _kl(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature))


def jensen_shannon(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    teacher_weight: float = 0.5,
) -> Tensor:
    """Generalised JSD, ``jsd``: β·KL(p‖m) + (1−β)·KL(q‖m) with m = β·p + (1−β)·q, per token.

    β = ``teacher_weight`` in TRL's ``generalized_jsd_loss`` convention (Agarwal et al. 2024, "On-policy
    distillation of language models", GKD). Shapes: ``(..., V)`` → ``(...)``.
    End points: β = 0 returns exactly :func:`forward_kl` and β = 1 exactly :func:`reverse_kl` (as TRL
    does; the interior formula itself tends to 0 there). Symmetric in (p, q) at β = 0.5, where it is
    the classic JSD, bounded by log 2. DistiLLM's ``js_distance(lam)`` is β = 1 − lam.

    >>> s, t = torch.tensor([[0.0, 5.0]]), torch.tensor([[5.0, 0.0]])
    >>> bool(jensen_shannon(s, t) <= math.log(2))
    True
    """
    _check(student_logits, teacher_logits, temperature, 0.0, teacher_weight)
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    beta = float(teacher_weight)
    if beta == 0.0:
        return _kl(log_p, log_q)
    if beta == 1.0:
        return _kl(log_q, log_p)
    log_m = _log_mix(log_p, log_q, beta)
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def total_variation(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Total variation distance, ``tvd``: ½·Σ_v |p_v − q_v|, per token, in [0, 1].

    Shapes: ``(..., V)`` → ``(...)``. Reference: Wen et al. 2023, "f-Divergence minimization for
    sequence-level knowledge distillation". End points: 0 iff p = q, 1 for disjoint supports.
    The gradient of |x| at x = 0 is taken as 0 (torch's sign convention).

    >>> total_variation(torch.tensor([[0.0, -math.inf]]), torch.tensor([[-math.inf, 0.0]])).tolist()
    [1.0]
    """
    _check(student_logits, teacher_logits, temperature, 0.0, 0.5)
    p = _log_probs(teacher_logits, temperature).exp()
    q = _log_probs(student_logits, temperature).exp()
    return 0.5 * (p - q).abs().sum(-1)


def skew_forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, skew: float = 0.1
) -> Tensor:
    """Skew forward KL, ``skl``: KL(p ‖ s·p + (1−s)·q), per token.

    Reference: Ko et al. 2024, "DistiLLM" (their α = ``skew``, default 0.1). Shapes: ``(..., V)`` →
    ``(...)``. End points: s = 0 is exactly :func:`forward_kl`; s = 1 gives 0; for s > 0 the value is
    finite (≤ −log s) even where q = 0.

    >>> float(skew_forward_kl(torch.tensor([[0.0, -math.inf]]), torch.tensor([[-math.inf, 0.0]]), skew=0.5))
    0.6931471824645996
    """
    _check(student_logits, teacher_logits, temperature, skew, 0.5)
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    return _kl(log_p, _log_mix(log_p, log_q, float(skew)))


def skew_reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, skew: float = 0.1
) -> Tensor:
    """Skew reverse KL, ``srkl``: KL(q ‖ (1−s)·p + s·q), per token.

    Reference: Ko et al. 2024, "DistiLLM". Shapes: ``(..., V)`` → ``(...)``. End points: s = 0 is
    exactly :func:`reverse_kl`; s = 1 gives 0; for s > 0 the value is finite (≤ −log s).

    >>> skew_reverse_kl(torch.zeros(1, 3), torch.zeros(1, 3)).tolist()
    [0.0]
    """
    _check(student_logits, teacher_logits, temperature, skew, 0.5)
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    return _kl(log_q, _log_mix(log_p, log_q, 1.0 - float(skew)))


def divergence(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    skew: float = 0.1,
    teacher_weight: float = 0.5,
) -> Tensor:
    """Per-token divergence ``name`` ∈ ``fkl, rkl, jsd, tvd, skl, srkl`` (see the module table).

    Shapes: ``(..., V)`` student and teacher logits (same shape, any float dtype) → ``(...)`` values in
    float32 (float64 for float64 inputs). τ divides both logits before the softmax; the τ² factor of
    the KD objective is *not* applied here (:func:`spectrumkd.losses.kd_loss` applies it). ``skew``
    is used by ``skl``/``srkl`` only, ``teacher_weight`` (β) by ``jsd`` only. End points as in the
    individual functions: β = 0/1 → fkl/rkl exactly, skew = 0 → the plain KL.
    Differentiable in both arguments.

    >>> t = torch.tensor([[2.0, 0.0, -1.0]])
    >>> [round(float(divergence(n, t, t)), 6) for n in DIVERGENCES]
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if name == "fkl":
        return forward_kl(student_logits, teacher_logits, temperature=temperature)
    if name == "rkl":
        return reverse_kl(student_logits, teacher_logits, temperature=temperature)
    if name == "jsd":
        return jensen_shannon(
            student_logits, teacher_logits, temperature=temperature, teacher_weight=teacher_weight
        )
    if name == "tvd":
        return total_variation(student_logits, teacher_logits, temperature=temperature)
    if name == "skl":
        return skew_forward_kl(student_logits, teacher_logits, temperature=temperature, skew=skew)
    if name == "srkl":
        return skew_reverse_kl(student_logits, teacher_logits, temperature=temperature, skew=skew)
    raise SpectrumKDError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")


def divergence_from_log_probs(
    name: str, log_q: Tensor, log_p: Tensor, *, skew: float = 0.1, teacher_weight: float = 0.5
) -> Tensor:
    """:func:`divergence` from already tempered log-probabilities ``log_q`` (student), ``log_p`` (teacher).

    Shapes ``(..., V)`` → ``(...)``; same formulas and end points as :func:`divergence`. Lets a caller
    share one ``log_softmax`` between the CE term and the divergence when τ = 1.

    >>> lp = torch.log_softmax(torch.tensor([[1.0, 0.0]]), -1)
    >>> divergence_from_log_probs("tvd", lp, lp).tolist()
    [0.0]
    """
    if name not in DIVERGENCES:
        raise SpectrumKDError(
            f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}"
        )
    if (
        name == "fkl"
        or (name == "jsd" and teacher_weight == 0.0)
        or (name == "skl" and skew == 0.0)
    ):
        return _kl(log_p, log_q)
    if (
        name == "rkl"
        or (name == "jsd" and teacher_weight == 1.0)
        or (name == "srkl" and skew == 0.0)
    ):
        return _kl(log_q, log_p)
    if name == "jsd":
        beta = float(teacher_weight)
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    if name == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    if name == "skl":
        return _kl(log_p, _log_mix(log_p, log_q, float(skew)))
    return _kl(log_q, _log_mix(log_p, log_q, 1.0 - float(skew)))  # srkl


# ----------------------------------------------------------------------------------------------
# Values plus analytic gradients, for the chunked and fused paths.
#
# With u = student_logits/τ and q = softmax(u), any D(q) has dD/du = q ⊙ (g − ⟨q, g⟩) where
# g = ∂D/∂q. The g of each divergence (constants dropped, since they cancel):
#   fkl:  dD/du = q − p (closed form)          rkl:  g = log q − log p
#   jsd:  g = (1−β)·(log q − log m)            tvd:  g = ½·sign(q − p)
#   skl:  g = −(1−s)·p/m                       srkl: g = log q − log m − s·q/m
# ----------------------------------------------------------------------------------------------


def _centered(q: Tensor, g: Tensor) -> Tensor:
    """q ⊙ (g − ⟨q, g⟩) with g set to 0 where q = 0 (so ±inf in g cannot leak as NaN)."""
    g = torch.where(q > 0, g, 0.0)
    return q * (g - (q * g).sum(-1, keepdim=True))


def _value_and_grad(
    name: str, log_q: Tensor, log_p: Tensor, skew: float, teacher_weight: float
) -> tuple[Tensor, Tensor]:
    q = log_q.exp()
    p = log_p.exp()
    if name == "jsd" and teacher_weight == 0.0:
        name = "fkl"
    if name == "jsd" and teacher_weight == 1.0:
        name = "rkl"
    if name == "skl" and skew == 0.0:
        name = "fkl"
    if name == "srkl" and skew == 0.0:
        name = "rkl"
    if name == "fkl":
        value = _kl(log_p, log_q, p)
        return value, q.sub_(p)
    if name == "rkl":
        value = _kl(log_q, log_p, q)
        return value, _centered(q, log_q - log_p)
    if name == "jsd":
        beta = float(teacher_weight)
        log_m = _log_mix(log_p, log_q, beta)
        kl_q = _kl(log_q, log_m)
        value = beta * _kl(log_p, log_m) + (1.0 - beta) * kl_q
        return value, _centered(q, (1.0 - beta) * (log_q - log_m))
    if name == "tvd":
        diff = q - p
        value = 0.5 * diff.abs().sum(-1)
        return value, _centered(q, 0.5 * diff.sign_())
    if name == "skl":
        log_m = _log_mix(log_p, log_q, float(skew))
        value = _kl(log_p, log_m)
        ratio = torch.where(p > 0, (log_p - log_m).exp(), 0.0)  # p/m, 0 where p = 0
        return value, _centered(q, -(1.0 - skew) * ratio)
    if name == "srkl":
        log_m = _log_mix(log_p, log_q, 1.0 - float(skew))
        value = _kl(log_q, log_m)
        log_ratio = log_q - log_m
        return value, _centered(q, log_ratio - skew * log_ratio.exp())
    raise SpectrumKDError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")


def divergence_and_grad(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    skew: float = 0.1,
    teacher_weight: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Values of :func:`divergence` and their gradient w.r.t. ``student_logits``, without autograd.

    Returns ``(values (...), grad (..., V), log_q (..., V))``: ``grad = ∂values/∂student_logits``
    (so it carries the 1/τ of the chain rule) in float32, and the tempered student log-probabilities
    ``log_q`` (reused for the CE term when τ = 1). Formulas and end points as :func:`divergence`
    (the gradient formulas are in the comment above this function's source). Teacher logits are
    constants here. Used per chunk by :mod:`spectrumkd.losses.chunked`.

    >>> s, t = torch.randn(4, 7, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 7)
    >>> v, g, _ = divergence_and_grad("fkl", s, t)
    >>> bool(torch.allclose(g.sum(-1), torch.zeros(4), atol=1e-6))
    True
    """
    _check(student_logits, teacher_logits, temperature, skew, teacher_weight)
    with torch.no_grad():
        log_q = _log_probs(student_logits, temperature)
        log_p = _log_probs(teacher_logits, temperature)
        value, grad = _value_and_grad(name, log_q, log_p, float(skew), float(teacher_weight))
        if temperature != 1.0:
            grad.mul_(1.0 / temperature)
    return value, grad, log_q
