"""Memory-light KD: the objective of :mod:`.objective` computed chunk by chunk of tokens.

Two paths, both exact (same value and gradients as the dense :func:`~spectrumkd.losses.kd_loss`):

- :func:`chunked_kd_loss` takes full logits and never holds more than ``chunk_size × V`` float32
  probabilities of either model at once; the only full-size tensor it allocates is the gradient
  w.r.t. the student logits, in their dtype (which any path must return).
- :func:`fused_kd_loss` takes the student's last hidden states and LM-head weight (and the teacher's
  logits, or its hidden states and LM-head weight) and forms the logits chunk by chunk inside the
  loss, so the full ``[tokens × vocab]`` logits of neither model ever exist; its gradients are
  ``[tokens × hidden]`` and ``[vocab × hidden]``.

As in Liger-Kernel's chunked distillation losses (``LigerFusedLinearDistillationBase``), the gradient
with respect to each chunk's logits is computed analytically during the forward pass
(the table of :mod:`spectrumkd.losses.divergences`, as :func:`~spectrumkd.losses.divergence_and_grad`
reads it, plus ``softmax − onehot`` for CE) and stored, so backward only scales it by the incoming gradient. Only unmasked positions (label ≠
``ignore_index``) are computed at all. Teacher inputs are constants (no gradient).

Float32 accuracy: log-probabilities are formed as ``z/τ − logsumexp(z/τ)`` in float32, not with
``torch.log_softmax``, whose vectorised CPU kernel is ~3× less accurate at LLM vocabulary sizes
(max error 8e-6 vs 3e-6 against float64 at vocab 49,152 and logits of scale 5); the gradients then
match a float64 reference to ~1e-6 relative (``benchmarks/bench_kd_loss.py`` reports it).

Optional compiled path (``compiled=True``): each chunk runs two functions under ``torch.compile``.
:func:`_chunk_stats` does only reductions (the log-sum-exps, Σ CE, Σ D and the divergence's center
⟨q, g⟩, kept as ``(C, 1)`` columns); :func:`_chunk_grad_into` is then purely elementwise and writes
the gradient into a given buffer: the chunk's own logits on the fused path, the rows of the
gradient on the chunked path. Compiled as one function, Inductor kept two ``chunk × V``
intermediates besides the gradient; split this way it keeps none, and the fused path's working set
is the chunk's two logits buffers (at vocab 49,152 and 2,048 tokens: 176 MiB at the peak instead
of 304, and faster). If compilation is unavailable or fails (no C++ compiler, an unsupported
backend, a dynamo error), the eager function is used instead and a ``RuntimeWarning`` says why,
once per process.

Not supported: double backward (second derivatives). The stored gradient is handed to autograd on
the first backward (no copy); a second backward of the same graph (``retain_graph=True``)
recomputes it from the inputs, which are saved by reference.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from spectrumkd import SpectrumKDError
from spectrumkd.losses.divergences import (
    _log_probs_lse as _log_probs,  # z − logsumexp(z): float32-accurate, for paths without autograd
)
from spectrumkd.losses.divergences import (
    _logits_grad_from_stats,
    _logits_value_and_grad,
    _logits_value_and_stats,
    _scaled,
    _tempered,
    check_same_vocab,
)
from spectrumkd.losses.objective import KDObjective, objective_from
from spectrumkd.losses.reduction import (
    KDLoss,
    check_aligned,
    check_teacher,
    masked_sum,
    token_denominator,
    weighted,
)


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one float32 ``chunk × V`` buffer is about 4 MiB (≥ 8 tokens).

    Small enough to stay in the CPU's caches across the dozen elementwise passes per chunk (on this
    2-core CPU, 32 × 32768 chunks run the KD loss ~1.8× faster than 256 × 32768), and to keep the
    per-chunk working memory a few percent of the ``[tokens × vocab]`` gradient; large enough that
    the per-chunk Python overhead stays small.

    >>> default_chunk_size(32768), default_chunk_size(49152), default_chunk_size(151936)
    (32, 21, 8)
    """
    return max(8, (1 << 20) // max(1, vocab_size))


def default_fused_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk of the fused path: one float32 ``chunk × V`` buffer of about 32 MiB.

    Larger than :func:`default_chunk_size` because every fused chunk runs two matmuls against the
    whole ``[V × H]`` LM head (and adds into its ``[V × H]`` gradient), which small chunks make
    slow.

    >>> default_fused_chunk_size(49152), default_fused_chunk_size(151936)
    (170, 55)
    """
    return max(16, (1 << 23) // max(1, vocab_size))


class _Setup(NamedTuple):
    """The static settings of one call: the objective, tokens per chunk, compiled or eager."""

    objective: KDObjective
    chunk: int
    compiled: bool


def _row_chunks(mask: Tensor, chunk_size: int) -> Iterator[tuple[slice, Tensor | None]]:
    """Contiguous row ranges of ≤ ``chunk_size`` rows that hold unmasked rows.

    Yields ``(rows, partial_mask)``: ``partial_mask`` is None when every row of the range is
    unmasked. Ranges are trimmed to their first/last unmasked row and fully masked ranges are
    skipped, so prompt and padding spans cost nothing. (Contiguous slices, not ``index_select``:
    gathering scattered ``V``-wide rows is many times slower on CPU than the loss itself.)
    """
    flags = mask.tolist()
    n = len(flags)
    for lo in range(0, n, chunk_size):
        hi = min(lo + chunk_size, n)
        rows = flags[lo:hi]
        if not any(rows):
            continue
        first = rows.index(True)
        last = len(rows) - rows[::-1].index(True)
        part = rows[first:last]
        yield slice(lo + first, lo + last), (None if all(part) else mask[lo + first : lo + last])


def _chunk_loss_and_grad(
    z: Tensor, t: Tensor | None, y: Tensor, m: Tensor | None, objective: KDObjective, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Summed CE and D over one chunk (rows with ``m`` False excluded), and the gradient.

    The gradient is d(ce_w·CE + (1−ce_w)·τ²·D)/dz in float32, 0 on excluded rows.
    """
    ce_w, kd_w = objective.weights()
    grad = None
    log_q = None
    if m is not None:
        y = y.clamp(min=0)  # excluded rows carry -1; any id keeps gather valid
    if objective.kd_active:
        assert t is not None
        d, grad_kd, log_q = _logits_value_and_grad(z, t, objective)  # (C,), (C, V), (C, V)
        kd_sum = masked_sum(d, m)
        if need_grad:
            grad = grad_kd.mul_(kd_w)
    if log_q is None or objective.temperature != 1.0:
        log_q = _log_probs(z, 1.0)  # (C, V): raw-logit log-probs for CE
    ce = -log_q.gather(1, y.unsqueeze(1)).squeeze(1)  # (C,)
    ce_sum = masked_sum(ce, m)
    if not objective.kd_active:
        kd_sum = ce_sum.new_zeros(())
    if need_grad and ce_w > 0.0:
        soft = log_q.exp_()  # softmax(z), in place: log_q is not needed any more
        soft[torch.arange(len(y), device=y.device), y] -= 1.0
        grad = soft.mul_(ce_w) if grad is None else grad.add_(soft, alpha=ce_w)
    if need_grad and grad is None:  # ce_weight = 0 and no KD: the loss is constant
        grad = torch.zeros_like(log_q)
    if grad is not None and m is not None:
        grad.masked_fill_(~m.unsqueeze(1), 0.0)
    return ce_sum, kd_sum, grad


def _chunk_stats(
    z: Tensor, t: Tensor | None, y: Tensor, m: Tensor | None, objective: KDObjective
) -> tuple[Tensor, Tensor, tuple]:
    """Pass 1 of the compiled path: Σ CE and Σ D of the chunk, and the row statistics of pass 2.

    Only reductions: what is kept is ``(C, 1)`` per row (the log-sum-exps, the divergence's
    center, the raw log-sum-exp for CE), never a ``(C, V)`` tensor.
    """
    if m is not None:
        y = y.clamp(min=0)  # excluded rows carry -1; any id keeps gather valid
    kd_stats = None
    if objective.kd_active:
        assert t is not None
        d, kd_stats = _logits_value_and_stats(z, t, objective)
        kd_sum = masked_sum(d, m)
    if kd_stats is not None and objective.temperature == 1.0:
        lse = kd_stats[0]  # the tempered log-sum-exp at τ = 1 is CE's
    else:
        lse = _tempered(z, 1.0)[1]
    ce_sum = masked_sum(lse.squeeze(1) - _scaled(z, 1.0).gather(1, y.unsqueeze(1)).squeeze(1), m)
    if not objective.kd_active:
        kd_sum = ce_sum.new_zeros(())
    return ce_sum, kd_sum, (kd_stats, lse)


def _chunk_grad_into(
    z: Tensor, t: Tensor | None, y: Tensor, m: Tensor | None, objective: KDObjective,
    stats: tuple, scale: Tensor, out: Tensor,
) -> None:  # fmt: skip
    """Pass 2: ``scale ×`` the gradient of :func:`_chunk_loss_and_grad`, written into ``out``.

    Elementwise only (from pass 1's row statistics), so under ``torch.compile`` it is one loop
    that may write over its own input: the fused path passes ``out=z`` and the chunk needs no
    ``(C, V)`` buffer beyond its logits.
    """
    kd_stats, lse = stats
    ce_w, kd_w = objective.weights()
    grad = None
    if objective.kd_active:
        assert t is not None
        grad = _logits_grad_from_stats(z, t, objective, kd_stats) * kd_w
    if ce_w > 0.0:
        log_soft = _tempered(z, 1.0, lse)[0]
        vocab = torch.arange(z.shape[1], device=z.device)
        soft = log_soft.exp() - (vocab.unsqueeze(0) == y.clamp(min=0).unsqueeze(1)).to(log_soft.dtype)
        grad = soft * ce_w if grad is None else grad + soft * ce_w
    if grad is None:  # ce_weight = 0 and no KD: the loss is constant
        grad = torch.zeros_like(z, dtype=out.dtype)
    if m is not None:
        grad = torch.where(m.unsqueeze(1), grad, 0.0)
    out.copy_(grad * scale)


@functools.lru_cache(maxsize=1)
def _compiled_holder() -> dict:
    """The process's compiled per-chunk function, created on first use.

    Compilation state is per process by nature (torch.compile caches are), so it is kept in one
    memoised dict rather than recompiled per call: ``{"fn": compiled or None, "failed": reason}``.
    """
    return {"fn": None, "failed": None}


def _compile(fn: Callable) -> Callable:
    """``torch.compile`` of ``fn`` (a seam for tests that force a failure)."""
    return torch.compile(fn, dynamic=True)


def _fall_back(reason: str) -> None:
    holder = _compiled_holder()
    if holder["failed"] is None:
        holder["failed"] = reason
        warnings.warn(
            f"spectrumkd: compiled KD loss unavailable, using the eager path ({reason})",
            RuntimeWarning,
            stacklevel=3,
        )


def _eager_chunk(z, t, y, m, objective, need_grad, scale, out):
    """The eager per-chunk step: ``(Σ CE, Σ D, scale × gradient or None)`` (``out`` unused: the
    one-pass function's in-place arithmetic already keeps its buffers few)."""
    ce_c, kd_c, g = _chunk_loss_and_grad(z, t, y, m, objective, need_grad)
    return ce_c, kd_c, (None if g is None else g.mul_(scale))


def _chunk_fn(compiled: bool) -> Callable:
    """The per-chunk step ``(z, t, y, m, objective, need_grad, scale, out) -> (Σ CE, Σ D, grad)``.

    ``grad`` is ``scale ×`` d(objective)/dz, or None without ``need_grad``. Compiled (if asked and
    available): two compiled passes, :func:`_chunk_stats` then :func:`_chunk_grad_into`, and the
    gradient is written into ``out`` (which is returned); else :func:`_eager_chunk`.
    """
    if not compiled:
        return _eager_chunk
    holder = _compiled_holder()
    if holder["failed"] is not None:
        return _eager_chunk
    if holder["fn"] is None:
        try:
            holder["fn"] = (_compile(_chunk_stats), _compile(_chunk_grad_into))
        except Exception as err:  # any failure means "use eager"; the warning says why
            _fall_back(f"{type(err).__name__}: {err}")
            return _eager_chunk
    stats_fn, grad_fn = holder["fn"]

    def call(z, t, y, m, objective, need_grad, scale, out):
        if holder["failed"] is not None:
            return _eager_chunk(z, t, y, m, objective, need_grad, scale, out)
        if m is not None:
            m = m.clone()  # a view's base size would be guarded on: one graph for all chunks
        try:
            ce_c, kd_c, stats = stats_fn(z, t, y, m, objective)
            if need_grad:
                grad_fn(z, t, y, m, objective, stats, scale, out)
        except Exception as err:  # torch.compile compiles lazily, on the first call
            _fall_back(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return _eager_chunk(z, t, y, m, objective, need_grad, scale, out)
        return ce_c, kd_c, (out if need_grad else None)

    return call


def _outputs(
    ctx: Any, ce_sum: Tensor, kd_sum: Tensor, den: Tensor, objective: KDObjective
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``(total, ce, kd)`` a forward returns; only ``total`` is differentiable."""
    total, ce, kd = weighted(ce_sum, kd_sum, den, objective)
    ctx.mark_non_differentiable(ce, kd)
    return total, ce, kd


def _is_one(g: Tensor) -> bool:
    return g.numel() == 1 and bool(g == 1)


def _sums(like: Tensor) -> tuple[Tensor, Tensor]:
    """Zero accumulators for Σ CE and Σ D (float64 for float64 inputs, else float32)."""
    ce_sum = torch.zeros((), dtype=torch.float64 if like.dtype == torch.float64 else torch.float32)
    return ce_sum, torch.zeros_like(ce_sum)


def _logits_pass(
    z: Tensor, t: Tensor | None, y: Tensor, setup: _Setup, den: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One pass over the chunks: summed CE and D, and d total / dz ``(N, V)`` if asked."""
    # z: (N, V) student logits, t: (N, V) teacher logits or None, y: (N,) labels (-1 = masked)
    mask = y >= 0
    grad_z = torch.empty_like(z) if need_grad else None  # (N, V), the only full-size buffer
    if grad_z is not None:
        grad_z.index_fill_(0, (~mask).nonzero().squeeze(1), 0.0)
    ce_sum, kd_sum = _sums(z)
    inv_den = 1.0 / den
    chunk_fn = _chunk_fn(setup.compiled)
    for sel, m in _row_chunks(mask, setup.chunk):
        t_c = None if t is None else t[sel]
        out = None if grad_z is None else grad_z[sel]
        ce_c, kd_c, g = chunk_fn(z[sel], t_c, y[sel], m, setup.objective, need_grad, inv_den, out)
        ce_sum += ce_c
        kd_sum += kd_c
        if grad_z is not None and g is not None and g is not out:
            grad_z[sel].copy_(g)
    return ce_sum, kd_sum, grad_z


class _ChunkedKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, t: Tensor | None, y: Tensor, setup: _Setup, den: Tensor):  # type: ignore[override]
        ce_sum, kd_sum, grad_z = _logits_pass(z, t, y, setup, den, ctx.needs_input_grad[0])
        # Inputs are saved by reference (no copy), only to recompute if backward runs twice.
        ctx.save_for_backward(z, t, y, den)
        ctx.setup, ctx.grad_z = setup, grad_z
        return _outputs(ctx, ce_sum, kd_sum, den, setup.objective)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_total: Tensor, _g_ce: Tensor, _g_kd: Tensor):  # type: ignore[override]
        grad_z = ctx.grad_z
        ctx.grad_z = None  # hand the buffer to autograd: no copy, freed with the graph
        if grad_z is None:  # a second backward (retain_graph=True): recompute
            z, t, y, den = ctx.saved_tensors
            grad_z = _logits_pass(z, t, y, ctx.setup, den, True)[2]
        if not _is_one(g_total):
            grad_z.mul_(g_total.to(grad_z.dtype))
        return grad_z, None, None, None, None


def _prepare(
    labels: Tensor, ignore_index: int, num_tokens: int | Tensor | None
) -> tuple[Tensor, Tensor, int | Tensor]:
    """Flat labels with masked rows as -1, the token denominator and the count."""
    y = labels.reshape(-1)
    mask = y != ignore_index
    if bool((y[mask] < 0).any()):
        raise SpectrumKDError(f"labels hold negative ids other than ignore_index={ignore_index}")
    den, count = token_denominator(mask, num_tokens)
    return torch.where(mask, y, -1), den, count


def _chunk(chunk_size: int | None, default: int) -> int:
    chunk = default if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise SpectrumKDError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk


def chunked_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    objective: KDObjective | None = None,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    compiled: bool = False,
    **fields: Any,
) -> KDLoss:
    """:func:`~spectrumkd.losses.kd_loss` computed ``chunk_size`` tokens at a time (same formula).

    ``total = [ce_weight·Σ CE_t + (1−ce_weight)·τ²·Σ D_t] / n`` over unmasked tokens (see
    :func:`~spectrumkd.losses.kd_loss` for every term and end point). The objective is
    ``objective=KDObjective(...)`` or its fields as keywords (``divergence="jsd", temperature=2.0``,
    ...). Shapes: logits ``(..., V)``, labels ``(...)``. Peak extra memory: the ``(..., V)``
    gradient in the student's dtype plus a few float32 ``chunk_size × V`` buffers, instead of
    several float32 ``(..., V)`` tensors. Reference: Liger-Kernel's chunked distillation losses
    (analytic per-chunk gradients). ``chunk_size=None`` picks :func:`default_chunk_size`. ``ce`` and
    ``kd`` are detached; teacher logits get no gradient. ``compiled=True`` runs the per-chunk
    function under ``torch.compile`` (eager fallback with one warning if compilation fails; see the
    module docstring).

    >>> g = torch.Generator().manual_seed(0)
    >>> s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    >>> y = torch.randint(0, 11, (2, 5), generator=g)
    >>> from spectrumkd.losses import kd_loss
    >>> a, b = kd_loss(s, t, y, divergence="jsd"), chunked_kd_loss(s, t, y, divergence="jsd", chunk_size=3)
    >>> bool(torch.allclose(a.total, b.total))
    True
    """
    obj = objective_from(objective, fields, "chunked_kd_loss")
    check_aligned(student_logits.shape[:-1], labels)
    vocab = student_logits.shape[-1]
    t = None
    if obj.kd_active:
        check_teacher(obj, teacher_logits is not None)
        assert teacher_logits is not None
        check_same_vocab(student_logits, teacher_logits)
        t = teacher_logits.detach().reshape(-1, vocab)
    setup = _Setup(obj, _chunk(chunk_size, default_chunk_size(vocab)), bool(compiled))
    y, den, count = _prepare(labels, ignore_index, num_tokens)
    total, ce, kd = _ChunkedKD.apply(student_logits.reshape(-1, vocab), t, y, setup, den)
    return KDLoss(total=total, ce=ce, kd=kd, num_tokens=count)


class _Fused(NamedTuple):
    """The fused path's tensors, flat: student h ``(N, H)`` and head w ``(V_s, H)``; the teacher as
    logits ``(N, V_t)`` or as hidden states ``(N, H_t)`` and head ``(V_t, H_t)`` (or neither);
    ``vocab`` is the shared length both are cut to."""

    h: Tensor
    w: Tensor
    t_logits: Tensor | None
    t_h: Tensor | None
    t_w: Tensor | None
    vocab: int


def _teacher_chunk(x: _Fused, sel: slice) -> Tensor:
    """The teacher's ``(C, V)`` logits of the rows ``sel``, formed here when given as hidden states."""
    if x.t_logits is not None:
        return x.t_logits[sel, : x.vocab]
    assert x.t_h is not None and x.t_w is not None
    return x.t_h[sel] @ x.t_w[: x.vocab].T


def _fused_pass(
    x: _Fused, y: Tensor, setup: _Setup, den: Tensor, need_h: bool, need_w: bool
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """One pass over the chunks: summed CE and D, and the gradients w.r.t. h and w if asked."""
    # y: (N,) labels, -1 = masked
    mask = y >= 0
    h, w, kd_active = x.h, x.w, setup.objective.kd_active
    w_v = w[: x.vocab]  # (V, H)
    grad_h = torch.zeros_like(h) if need_h else None
    # Accumulate the LM-head gradient in float32 across chunks whatever the weight's dtype.
    acc_dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    grad_w = torch.zeros(w.shape, dtype=acc_dtype, device=w.device) if need_w else None
    ce_sum, kd_sum = _sums(h)
    inv_den = 1.0 / den
    chunk_fn = _chunk_fn(setup.compiled)
    for sel, m in _row_chunks(mask, setup.chunk):
        h_c = h[sel]  # (C, H)
        z_c = h_c @ w_v.T  # (C, V), in the model's dtype, as the LM head would produce it
        t_c = _teacher_chunk(x, sel) if kd_active else None
        # The compiled step writes the chunk's gradient over its logits (out=z_c).
        ce_c, kd_c, g = chunk_fn(z_c, t_c, y[sel], m, setup.objective, need_h or need_w, inv_den,
                                 z_c)  # fmt: skip
        del z_c, t_c  # free both (C, V) buffers before the next chunk allocates its own
        ce_sum += ce_c
        kd_sum += kd_c
        if g is None:
            continue
        g = g.to(h.dtype)  # (C, V)
        if grad_h is not None:
            grad_h[sel] = g @ w_v  # (C, H)
        if grad_w is not None:
            grad_w[: x.vocab].addmm_(g.T.to(acc_dtype), h_c.to(acc_dtype))  # (V, H)
        del g
    return ce_sum, kd_sum, [grad_h, None if grad_w is None else grad_w.to(w.dtype)]


class _FusedKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, y, t_logits, t_h, t_w, setup, den, vocab):  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        x = _Fused(h, w, t_logits, t_h, t_w, vocab)
        ce_sum, kd_sum, grads = _fused_pass(x, y, setup, den, need_h, need_w)
        ctx.save_for_backward(h, w, y, t_logits, t_h, t_w, den)  # by reference, for a 2nd backward
        ctx.setup, ctx.vocab, ctx.grads = setup, vocab, grads
        return _outputs(ctx, ce_sum, kd_sum, den, setup.objective)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_total: Tensor, _g_ce: Tensor, _g_kd: Tensor):  # type: ignore[override]
        grads = ctx.grads
        ctx.grads = None
        if grads is None:  # a second backward (retain_graph=True): recompute
            h, w, y, t_logits, t_h, t_w, den = ctx.saved_tensors
            x = _Fused(h, w, t_logits, t_h, t_w, ctx.vocab)
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grads = _fused_pass(x, y, ctx.setup, den, need_h, need_w)[2]
        if not _is_one(g_total):
            grads = [None if g is None else g.mul_(g_total.to(g.dtype)) for g in grads]
        return grads[0], grads[1], None, None, None, None, None, None, None


def _fused_inputs(
    student_hidden: Tensor,
    student_lm_head_weight: Tensor,
    labels: Tensor,
    teacher: tuple[Tensor | None, Tensor | None, Tensor | None],
    obj: KDObjective,
    vocab_size: int | None,
) -> _Fused:
    """The checked, flattened inputs of :func:`fused_kd_loss` (teacher = logits, hidden, head)."""
    check_aligned(student_hidden.shape[:-1], labels, "hidden states")
    hidden = student_hidden.shape[-1]
    if student_lm_head_weight.dim() != 2 or student_lm_head_weight.shape[1] != hidden:
        raise SpectrumKDError(
            f"student LM-head weight {tuple(student_lm_head_weight.shape)} is not (V, {hidden})"
        )
    t_logits, t_h, t_w = teacher
    has_hidden = t_h is not None and t_w is not None
    check_teacher(obj, t_logits is not None or has_hidden,
                  "teacher_logits, or teacher_hidden and teacher_lm_head_weight")  # fmt: skip
    vocabs = [student_lm_head_weight.shape[0]]
    if not obj.kd_active:
        t_logits = t_h = t_w = None
    elif t_logits is not None:
        check_aligned(t_logits.shape[:-1], labels, "teacher logits")
        t_logits, t_h, t_w = t_logits.detach().reshape(-1, t_logits.shape[-1]), None, None
        vocabs.append(t_logits.shape[-1])
    else:
        assert t_h is not None and t_w is not None
        check_aligned(t_h.shape[:-1], labels, "teacher hidden states")
        t_h, t_w = t_h.detach().reshape(-1, t_h.shape[-1]), t_w.detach()
        vocabs.append(t_w.shape[0])
    if vocab_size is None and len(set(vocabs)) > 1:
        raise SpectrumKDError(
            f"student and teacher vocabularies differ ({vocabs[0]} vs {vocabs[1]} rows); pass "
            "vocab_size = the shared tokenizer length"
        )
    vocab = vocabs[0] if vocab_size is None else int(vocab_size)
    if not 1 <= vocab <= min(vocabs):
        raise SpectrumKDError(f"vocab_size {vocab} exceeds a vocabulary ({vocabs}) or is < 1")
    h = student_hidden.reshape(-1, hidden)
    return _Fused(h, student_lm_head_weight, t_logits, t_h, t_w, vocab)


def fused_kd_loss(
    student_hidden: Tensor,
    student_lm_head_weight: Tensor,
    labels: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_hidden: Tensor | None = None,
    teacher_lm_head_weight: Tensor | None = None,
    objective: KDObjective | None = None,
    num_tokens: int | Tensor | None = None,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    compiled: bool = False,
    **fields: Any,
) -> KDLoss:
    """:func:`~spectrumkd.losses.kd_loss` from hidden states and LM heads, logits formed per chunk.

    ``student_logits = student_hidden @ student_lm_head_weight.T`` (no bias, as in GPT-2/Llama/Qwen
    LM heads), likewise for the teacher unless ``teacher_logits`` is given; then the objective
    ``[ce_weight·Σ CE_t + (1−ce_weight)·τ²·Σ D_t] / n`` exactly as :func:`~spectrumkd.losses.kd_loss`
    (``objective=KDObjective(...)`` or its fields as keywords).

    Shapes: ``student_hidden (..., H)``, ``student_lm_head_weight (V_s, H)``, ``labels (...)``
    aligned (the caller shifts); teacher either ``teacher_logits (..., V_t)`` or ``teacher_hidden
    (..., H_t)`` with ``teacher_lm_head_weight (V_t, H_t)``. Both vocabularies are cut to
    ``vocab_size`` (the shared tokenizer length; required when V_s ≠ V_t — never zero-padded).
    Gradients flow to ``student_hidden`` and ``student_lm_head_weight`` only (rows beyond
    ``vocab_size`` get 0). Reference: Liger-Kernel ``LigerFusedLinearJSDLoss`` /
    ``LigerFusedLinearDistillationBase`` (chunked logits, analytic gradients in forward).
    End points as :func:`~spectrumkd.losses.kd_loss`; ``chunk_size=None`` →
    :func:`default_fused_chunk_size` (sized for the eager path); ``compiled`` as in
    :func:`chunked_kd_loss`. Compiled, a chunk holds only its two logits buffers, and 128 tokens
    per chunk was both faster and leaner than every peer at vocab 49,152 and 151,936
    (``benchmarks/bench_peers.py``, docs/scaling.md).

    >>> g = torch.Generator().manual_seed(0)
    >>> h, w = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    >>> t = torch.randn(6, 9, generator=g)
    >>> y = torch.tensor([1, 2, -100, 3, 4, 5])
    >>> from spectrumkd.losses import kd_loss
    >>> a = fused_kd_loss(h, w, y, teacher_logits=t, chunk_size=4).total
    >>> bool(torch.allclose(a, kd_loss(h @ w.T, t, y).total))
    True
    """
    obj = objective_from(objective, fields, "fused_kd_loss")
    teacher = (teacher_logits, teacher_hidden, teacher_lm_head_weight)
    x = _fused_inputs(student_hidden, student_lm_head_weight, labels, teacher, obj, vocab_size)
    setup = _Setup(obj, _chunk(chunk_size, default_fused_chunk_size(x.vocab)), bool(compiled))
    y, den, count = _prepare(labels, ignore_index, num_tokens)
    total, ce, kd = _FusedKD.apply(x.h, x.w, y, x.t_logits, x.t_h, x.t_w, setup, den, x.vocab)
    return KDLoss(total=total, ce=ce, kd=kd, num_tokens=count)
