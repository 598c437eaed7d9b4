"""Per-token divergences between teacher and student next-token distributions: one table.

Every function maps ``(..., V)`` logits to ``(...)`` values with one argument order,
``(student_logits, teacher_logits, *, temperature, ...)``. Notation (docs/design.md §6):
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

Each formula is written once, in ``_FORMULAS``: ``{name: (value, grad)}`` over tempered
log-probabilities, where ``grad`` is the analytic gradient with respect to the tempered student
logits ``u = student_logits/τ``. The end points are resolved in one place, :func:`_resolve`:
β is ``teacher_weight`` in TRL's ``generalized_jsd_loss`` convention, and β = 0 is *exactly*
``fkl``, β = 1 exactly ``rkl`` (the interior formula tends to 0 at both ends, so these are special
cases, and we say so rather than hide them); ``skew`` s = 0 is exactly the plain KL; s = 1 gives 0.
The named functions (:func:`forward_kl`, ...) and :func:`divergence` read the table through
autograd; :func:`divergence_and_grad` reads both columns without autograd, as the chunked and fused
paths (:mod:`.chunked`) do per chunk, so that their backward pass costs nothing extra
(Liger-Kernel's chunked distillation losses do the same).

Numerics: mixtures are formed in log space (``logaddexp``); terms with a zero weight (``p = 0`` in
KL(p‖·)) count 0 via ``where`` on the inner difference, so −inf logits (masked vocabulary entries)
give neither NaN values nor NaN gradients. A KL is +inf, honestly, when its first argument has mass
where its second has none (e.g. ``fkl`` with a student logit of −inf where the teacher's is finite).
Through autograd the log-probabilities are ``torch.log_softmax`` (which saves only its output);
without autograd they are ``z/τ − logsumexp(z/τ)``, which is ~3× more accurate in float32 at LLM
vocabulary sizes (max error 3e-6 vs 8e-6 against float64 at vocab 49,152 and logits of scale 5:
``torch.log_softmax``'s vectorised CPU kernel), but would save ``z/τ`` for autograd.

Not here: masking, token reduction, the τ² factor and the CE term (:mod:`.reduction`); the
parameter checks (:func:`spectrumkd.losses.objective.check_objective`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from spectrumkd import SpectrumKDError
from spectrumkd.losses.objective import DIVERGENCES, KDObjective

__all__ = [
    "DIVERGENCES",
    "divergence",
    "divergence_and_grad",
    "divergence_from_log_probs",
    "forward_kl",
    "jensen_shannon",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "total_variation",
]

# Log-probabilities are clamped to this floor only as *inputs of logaddexp*: where both sides are
# -inf the mixture weight of the term is 0 anyway, and a finite floor keeps logaddexp's gradient
# (exp(a - out)) from becoming exp(-inf + inf) = NaN. Any float32 log-probability below ~-104 has
# probability exactly 0, so the floor never changes a value.
_LOG_FLOOR = -1e30


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """``logits / τ`` in float32 (float64 kept, for gradcheck): what every log-probability reads."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    return x / temperature if temperature != 1.0 else x


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / τ) over the last dim, in float32 (float64 kept); for autograd paths."""
    return torch.log_softmax(_scaled(logits, temperature), dim=-1)


def _tempered(logits: Tensor, temperature: float, lse: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(x − lse, lse)`` for x = logits/τ (:func:`_scaled`); ``lse`` reused when given.

    ``torch.logsumexp`` reduces with an accurate max-shifted sum, and the subtraction is exact to
    half an ulp, so the error is that of one float32 rounding of ``x`` plus one of the logsumexp;
    ``torch.log_softmax`` on CPU is ~3× worse at V ≈ 50k (see the module docstring). For paths
    without autograd (it would save ``x``).
    """
    x = _scaled(logits, temperature)
    if lse is None:
        lse = torch.logsumexp(x, dim=-1, keepdim=True)
    return x - lse, lse


def _log_probs_lse(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / τ) as ``x − logsumexp(x)`` (:func:`_tempered`), float32-accurate."""
    return _tempered(logits, temperature)[0]


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


def _masked_g(q: Tensor, g: Tensor) -> Tensor:
    """g set to 0 where q = 0 (so ±inf in g cannot leak as NaN into q ⊙ g)."""
    return torch.where(q > 0, g, 0.0)


class _Terms(NamedTuple):
    """What a formula reads: tempered log-probabilities, the mixture and the weight w (β or s).

    ``q`` and ``p`` are the probabilities when the caller already has them (the gradient path
    always does), else None and the value formulas exponentiate where they need to.
    """

    log_q: Tensor
    log_p: Tensor
    log_m: Tensor | None  # log of the mixture m (jsd, skl, srkl), else None
    w: float
    q: Tensor | None = None
    p: Tensor | None = None


class _Grad(NamedTuple):
    """The gradient column of the table: dD/du (u = tempered student logits, q = softmax(u)).

    ``centered``: dD/du = q ⊙ (g − ⟨q, g⟩) with g = ``fn(terms)`` (∂D/∂q, constants dropped since
    they cancel); else ``fn`` is dD/du in closed form. :meth:`center` is the row reduction ⟨q, g⟩
    alone, so a two-pass caller (the compiled chunk path of :mod:`.chunked`) can keep only that
    ``(..., 1)`` column between a pass of reductions and a pass of elementwise work.
    """

    fn: Callable[[_Terms], Tensor]
    centered: bool = True

    def center(self, t: _Terms) -> Tensor | None:
        """⟨q, g⟩ per row, ``(..., 1)``; None for a closed form."""
        if not self.centered:
            return None
        return (t.q * _masked_g(t.q, self.fn(t))).sum(-1, keepdim=True)

    def __call__(self, t: _Terms, center: Tensor | None = None) -> Tensor:
        """dD/du; ``center`` is a precomputed :meth:`center` of the same terms."""
        if not self.centered:
            return self.fn(t)
        g = _masked_g(t.q, self.fn(t))
        if center is None:
            center = (t.q * g).sum(-1, keepdim=True)
        return t.q * (g - center)


# With u = student_logits/τ and q = softmax(u), any D(q) has dD/du = q ⊙ (g − ⟨q, g⟩) where
# g = ∂D/∂q (constants dropped, since they cancel): a centered _Grad. The g of each:
#   fkl:  dD/du = q − p (closed form)          rkl:  g = log q − log p
#   jsd:  g = (1−β)·(log q − log m)            tvd:  g = ½·sign(q − p)
#   skl:  g = −(1−s)·p/m                       srkl: g = log q − log m − s·q/m
# A gradient formula runs after its value formula and may overwrite q (fkl does, in place).
def _prob(log_a: Tensor, a: Tensor | None) -> Tensor:
    return log_a.exp() if a is None else a


def _skl_g(t: _Terms) -> Tensor:
    ratio = torch.where(t.p > 0, (t.log_p - t.log_m).exp(), 0.0)  # p/m, 0 where p = 0
    return -(1.0 - t.w) * ratio


def _srkl_g(t: _Terms) -> Tensor:
    log_ratio = t.log_q - t.log_m
    return log_ratio - t.w * log_ratio.exp()


_Formula = tuple[Callable[[_Terms], Tensor], _Grad]
_FORMULAS: dict[str, _Formula] = {  # name: (value, d value / d u)
    "fkl": (lambda t: _kl(t.log_p, t.log_q, t.p), _Grad(lambda t: t.q.sub_(t.p), centered=False)),
    "rkl": (lambda t: _kl(t.log_q, t.log_p, t.q), _Grad(lambda t: t.log_q - t.log_p)),
    "jsd": (
        lambda t: t.w * _kl(t.log_p, t.log_m, t.p) + (1.0 - t.w) * _kl(t.log_q, t.log_m, t.q),
        _Grad(lambda t: (1.0 - t.w) * (t.log_q - t.log_m)),
    ),
    "tvd": (
        lambda t: 0.5 * (_prob(t.log_q, t.q) - _prob(t.log_p, t.p)).abs().sum(-1),
        _Grad(lambda t: 0.5 * (t.q - t.p).sign_()),
    ),
    "skl": (lambda t: _kl(t.log_p, t.log_m, t.p), _Grad(_skl_g)),
    "srkl": (lambda t: _kl(t.log_q, t.log_m, t.q), _Grad(_srkl_g)),
}


def _known(name: str) -> str:
    if name not in _FORMULAS:
        raise SpectrumKDError(
            f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}"
        )
    return name


def _resolve(name: str, skew: float, teacher_weight: float) -> tuple[str, float, float | None]:
    """The end points, in one place: ``(formula, w, share of p in the mixture m or None)``.

    jsd at β = 0 is fkl and at β = 1 rkl; skl and srkl at s = 0 are fkl and rkl. Otherwise jsd
    mixes m = β·p + (1−β)·q, skl m = s·p + (1−s)·q, srkl m = (1−s)·p + s·q.
    """
    beta, s = float(teacher_weight), float(skew)
    if _known(name) == "jsd":
        if beta in (0.0, 1.0):
            return ("fkl" if beta == 0.0 else "rkl"), 0.0, None
        return "jsd", beta, beta
    if name == "skl":
        return ("fkl", 0.0, None) if s == 0.0 else ("skl", s, s)
    if name == "srkl":
        return ("rkl", 0.0, None) if s == 0.0 else ("srkl", s, 1.0 - s)
    return name, 0.0, None


def _terms(
    name: str, log_q: Tensor, log_p: Tensor, skew: float, teacher_weight: float, probs: bool
) -> tuple[_Formula, _Terms]:
    formula, w, p_share = _resolve(name, skew, teacher_weight)
    log_m = None if p_share is None else _log_mix(log_p, log_q, p_share)
    q, p = (log_q.exp(), log_p.exp()) if probs else (None, None)
    return _FORMULAS[formula], _Terms(log_q, log_p, log_m, w, q, p)


def _value_and_grad(
    name: str, log_q: Tensor, log_p: Tensor, skew: float, teacher_weight: float
) -> tuple[Tensor, Tensor]:
    """Values and d values / d u (u = tempered student logits) from the table, no autograd."""
    (value, grad), terms = _terms(name, log_q, log_p, skew, teacher_weight, probs=True)
    return value(terms), grad(terms)


def _logits_value_and_stats(
    student_logits: Tensor, teacher_logits: Tensor, objective: KDObjective
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None]]:
    """Pass 1 of two: the values and the per-row ``(lse_q, lse_p, center)`` that pass 2
    (:func:`_logits_grad_from_stats`) needs, each ``(..., 1)`` — no ``(..., V)`` result."""
    tau = objective.temperature
    log_q, lse_q = _tempered(student_logits, tau)
    log_p, lse_p = _tempered(teacher_logits, tau)
    (value, grad), terms = _terms(objective.divergence, log_q, log_p, objective.skew,
                                  objective.teacher_weight, probs=True)  # fmt: skip
    return value(terms), (lse_q, lse_p, grad.center(terms))


def _logits_grad_from_stats(
    student_logits: Tensor, teacher_logits: Tensor, objective: KDObjective,
    stats: tuple[Tensor, Tensor, Tensor | None],
) -> Tensor:  # fmt: skip
    """Pass 2: d values / d student_logits from pass 1's row statistics (elementwise only)."""
    tau = objective.temperature
    lse_q, lse_p, center = stats
    log_q, _ = _tempered(student_logits, tau, lse_q)
    log_p, _ = _tempered(teacher_logits, tau, lse_p)
    (_, grad), terms = _terms(objective.divergence, log_q, log_p, objective.skew,
                              objective.teacher_weight, probs=True)  # fmt: skip
    out = grad(terms, center)
    return out * (1.0 / tau) if tau != 1.0 else out


def _logits_value_and_grad(
    student_logits: Tensor, teacher_logits: Tensor, objective: KDObjective
) -> tuple[Tensor, Tensor, Tensor]:
    """``(values, d values / d student_logits, log_q)`` of checked inputs; no autograd, no checks.

    The per-chunk step of :mod:`.chunked` (and of :func:`divergence_and_grad`): log-probabilities
    as ``z/τ − logsumexp(z/τ)`` (float32-accurate), the table, and the chain rule's 1/τ.
    """
    tau = objective.temperature
    log_q = _log_probs_lse(student_logits, tau)
    log_p = _log_probs_lse(teacher_logits, tau)
    value, grad = _value_and_grad(
        objective.divergence, log_q, log_p, objective.skew, objective.teacher_weight
    )
    if tau != 1.0:
        grad.mul_(1.0 / tau)  # chain rule through z / τ
    return value, grad, log_q


def check_same_vocab(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raise unless student and teacher logits have the same shape (same positions, same V)."""
    if student_logits.shape != teacher_logits.shape:
        raise SpectrumKDError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; slice both to the shared tokenizer "
            "length with spectrumkd.losses.shared_vocab_logits"
        )


def _checked(
    name: str, s: Tensor, t: Tensor, temperature: float, skew: float, teacher_weight: float
) -> KDObjective:
    """The per-token functions' arguments checked (name, shapes, then the numbers)."""
    _known(name)
    check_same_vocab(s, t)
    return KDObjective(name, temperature, 0.0, skew, teacher_weight)


def divergence_from_log_probs(
    name: str, log_q: Tensor, log_p: Tensor, *, skew: float = 0.1, teacher_weight: float = 0.5
) -> Tensor:
    """:func:`divergence` from already tempered log-probabilities ``log_q`` (student), ``log_p`` (teacher).

    Shapes ``(..., V)`` → ``(...)``; same formulas and end points as :func:`divergence`. Lets a caller
    share one ``log_softmax`` between the CE term and the divergence when τ = 1. Differentiable.

    >>> lp = torch.log_softmax(torch.tensor([[1.0, 0.0]]), -1)
    >>> divergence_from_log_probs("tvd", lp, lp).tolist()
    [0.0]
    """
    (value, _), terms = _terms(name, log_q, log_p, skew, teacher_weight, probs=False)
    return value(terms)


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
    module docstring: β = 0/1 → fkl/rkl exactly, skew = 0 → the plain KL.
    Differentiable in both arguments.

    >>> t = torch.tensor([[2.0, 0.0, -1.0]])
    >>> [round(float(divergence(n, t, t)), 6) for n in DIVERGENCES]
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    o = _checked(name, student_logits, teacher_logits, temperature, skew, teacher_weight)
    log_q = _log_probs(student_logits, o.temperature)
    log_p = _log_probs(teacher_logits, o.temperature)
    return divergence_from_log_probs(name, log_q, log_p, skew=o.skew, teacher_weight=o.teacher_weight)


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
    (the gradient formulas are in the comment above ``_FORMULAS``); log-probabilities as
    ``z/τ − logsumexp(z/τ)`` (see the module docstring). Teacher logits are constants here. The
    chunked and fused paths of :mod:`spectrumkd.losses.chunked` run this per chunk.

    >>> s, t = torch.randn(4, 7, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 7)
    >>> v, g, _ = divergence_and_grad("fkl", s, t)
    >>> bool(torch.allclose(g.sum(-1), torch.zeros(4), atol=1e-6))
    True
    """
    o = _checked(name, student_logits, teacher_logits, temperature, skew, teacher_weight)
    with torch.no_grad():
        return _logits_value_and_grad(student_logits, teacher_logits, o)


# The named divergences: thin wrappers of divergence(), for readers and for the docs.


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
    return divergence("fkl", student_logits, teacher_logits, temperature=temperature)


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Reverse KL, ``rkl``: KL(q‖p) = Σ_v q_v·(log q_v − log p_v), per token.

    Shapes: ``(..., V)`` → ``(...)``. Reference: Gu et al. 2023, "MiniLLM" (mode-seeking KD).
    End points: 0 iff p = q; +inf where p_v = 0 < q_v; entries with q_v = 0 contribute 0.

    >>> reverse_kl(torch.zeros(2, 4), torch.zeros(2, 4)).tolist()
    [0.0, 0.0]
    """
    return divergence("rkl", student_logits, teacher_logits, temperature=temperature)


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
    return divergence(
        "jsd", student_logits, teacher_logits, temperature=temperature, teacher_weight=teacher_weight
    )


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
    return divergence("tvd", student_logits, teacher_logits, temperature=temperature)


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
    return divergence("skl", student_logits, teacher_logits, temperature=temperature, skew=skew)


def skew_reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, skew: float = 0.1
) -> Tensor:
    """Skew reverse KL, ``srkl``: KL(q ‖ (1−s)·p + s·q), per token.

    Reference: Ko et al. 2024, "DistiLLM". Shapes: ``(..., V)`` → ``(...)``. End points: s = 0 is
    exactly :func:`reverse_kl`; s = 1 gives 0; for s > 0 the value is finite (≤ −log s).

    >>> skew_reverse_kl(torch.zeros(1, 3), torch.zeros(1, 3)).tolist()
    [0.0]
    """
    return divergence("srkl", student_logits, teacher_logits, temperature=temperature, skew=skew)
