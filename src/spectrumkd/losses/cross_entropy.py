"""Token cross-entropy and gathered student logits from one logsumexp, with an analytic gradient.

:func:`ce_and_gather` is the vocabulary-sized work shared by the SFT objective and the sparse
(top-k teacher) objective: per position, ``CE_t = logsumexp(z_t) − z_t[y_t]`` on the raw student
logits, and (optionally) the student logits gathered at the teacher's k ids. Everything else the
sparse objective needs lives on those k values, so a KD step from cached targets costs one
vocabulary-sized pass more than nothing: no second softmax, no ``[tokens × vocab]`` log-probability
tensor kept for backward, no zero-filled scatter buffer.

Forward reads the logits once in row blocks of about 4 MiB (a cache-friendly ``logsumexp``);
backward writes ``d total / dz = g_ce·(softmax(z) − onehot(y)) + scatter(ids, g_gathered)`` straight
into the one ``[..., V]`` gradient buffer (softmax recomputed from the saved ``logsumexp``, so
nothing vocabulary-sized is saved but the input logits, by reference). Masked rows (label =
``ignore_index``) cost nothing and get a zero gradient. Values and gradients equal
``log_softmax``/``gather`` autograd to float rounding (tests compare against a float64 reference).

Not here: the KD term on the gathered logits and token normalisation (:mod:`.sparse`,
:mod:`.objective`). Not supported: double backward (second derivatives).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["ce_and_gather", "ce_gather_tail"]


def _block_rows(vocab: int) -> int:
    """Rows per block so that one float32 ``rows × V`` temporary is about 4 MiB."""
    return max(1, (1 << 20) // max(1, vocab))


def _as_3d(x: Tensor) -> Tensor:
    """A ``(B, T, V)`` view of ``(..., V)`` logits (a copy only if no view exists)."""
    if x.dim() == 1:
        return x.view(1, 1, -1)
    if x.dim() == 2:
        return x.unsqueeze(0)
    try:
        return x.view(-1, x.shape[-2], x.shape[-1])
    except RuntimeError:
        return x.reshape(-1, x.shape[-2], x.shape[-1])


def _blocks(mask: Tensor, rows: int) -> Iterator[tuple[int, int, int, Tensor | None]]:
    """``(b, lo, hi, partial_mask)`` row blocks of a ``(B, T)`` mask that hold unmasked rows.

    ``partial_mask`` is None when every row of the block is unmasked. Blocks without an unmasked row
    are skipped (prompt and padding spans cost nothing).
    """
    flags = mask.tolist()
    for b, row in enumerate(flags):
        for lo in range(0, len(row), rows):
            part = row[lo : lo + rows]
            if not any(part):
                continue
            hi = lo + len(part)
            yield b, lo, hi, (None if all(part) else mask[b, lo:hi])


class _CEGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, mask: Tensor, ids: Tensor | None, tail: bool):  # type: ignore[override]
        # z (..., V) logits; y (...) labels with masked rows set to 0; mask (...) bool; ids (..., k);
        # tail: also the logsumexp over the ids *not* in ids (the student's tail, ids required)
        acc = torch.float64 if z.dtype == torch.float64 else torch.float32
        z3, m3 = _as_3d(z), mask.reshape(-1, z.shape[-2] if z.dim() > 1 else 1)
        lse = torch.zeros(m3.shape, dtype=acc, device=z.device)  # (B, T); 0 on skipped rows
        lse_tail = torch.zeros(m3.shape if tail else (0,), dtype=acc, device=z.device)
        ids3 = ids.reshape(*m3.shape, ids.shape[-1]) if tail else None
        rows = _block_rows(z.shape[-1])
        for b, lo, hi, _ in _blocks(m3, rows):
            if tail:  # one exp pass gives both sums: the whole row, then the row without the ids
                lse[b, lo:hi], lse_tail[b, lo:hi] = _lse_and_tail(z3[b, lo:hi].to(acc), ids3[b, lo:hi])
            else:
                lse[b, lo:hi] = torch.logsumexp(z3[b, lo:hi].to(acc), dim=-1)
        lse = lse.view(mask.shape)
        lse_tail = lse_tail.view(mask.shape) if tail else lse_tail
        z_y = z.gather(-1, y.unsqueeze(-1)).squeeze(-1).to(acc)
        ce = torch.where(mask, lse - z_y, 0.0)  # (...)
        z_s = z.gather(-1, ids).to(acc) if ids is not None else z.new_zeros(0, dtype=acc)
        ctx.save_for_backward(z, y, mask, lse, ids, lse_tail if tail else None)
        ctx.set_materialize_grads(False)
        return ce, z_s, lse_tail

    @staticmethod
    @once_differentiable
    def backward(ctx, g_ce: Tensor | None, g_zs: Tensor | None, g_tail: Tensor | None):  # type: ignore[override]
        z, y, mask, lse, ids, lse_tail = ctx.saved_tensors
        grad = torch.empty(z.shape, dtype=z.dtype, device=z.device)  # the one (..., V) buffer
        g3, z3 = _as_3d(grad), _as_3d(z)
        m3 = mask.reshape(g3.shape[:2])
        if lse_tail is not None and g_tail is not None:
            _tail_softmax_grad(g3, z3, m3, lse, lse_tail, ids, g_ce, g_tail)
        elif g_ce is None:
            grad.zero_()
        else:
            _softmax_grad(g3, z3, m3, lse, g_ce)
        if g_ce is not None:
            g_ce = torch.where(mask, g_ce, 0.0)
            grad.scatter_add_(-1, y.unsqueeze(-1), (-g_ce).unsqueeze(-1).to(z.dtype))
        if g_zs is not None and ids is not None:
            grad.scatter_add_(-1, ids, g_zs.to(z.dtype))
        return grad, None, None, None, None


def _lse_and_tail(x: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(logsumexp(x), logsumexp of x without the entries at ids)`` per row of ``x (rows, V)``.

    The tail is summed directly (no ``1 − Σ_S`` cancellation), so a tail of 1e-20 of the mass is
    as exact as one of 0.5; an empty tail (the ids cover the row) is −inf.
    """
    m = x.amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).min)  # a row of −inf stays finite
    e = (x - m).exp_()
    lse = e.sum(-1).log_().add_(m.squeeze(-1))
    e.scatter_(-1, ids, 0.0)
    tail_sum = e.sum(-1)
    tail = tail_sum.log().add_(m.squeeze(-1))
    lost = tail_sum == 0  # the whole tail underflowed (over ~100 nats below the row's maximum)
    if bool(lost.any()):
        tail[lost] = x[lost].scatter(-1, ids[lost], -math.inf).logsumexp(-1)
    return lse, tail


def _softmax_grad(g3: Tensor, z3: Tensor, m3: Tensor, lse: Tensor, g_ce: Tensor) -> None:
    """``g3 = g_ce·softmax(z)`` on unmasked rows, 0 elsewhere (block by block, in place)."""
    g_ce = torch.where(m3.view(g_ce.shape), g_ce, 0.0)
    lse3, gce3 = lse.reshape(m3.shape), g_ce.reshape(m3.shape)
    done = torch.zeros(m3.shape, dtype=torch.bool)
    for b, lo, hi, part in _blocks(m3, _block_rows(z3.shape[-1])):
        out = g3[b, lo:hi]
        if z3.dtype == lse.dtype:  # float32/float64: compute in the gradient buffer itself
            torch.sub(z3[b, lo:hi], lse3[b, lo:hi].unsqueeze(-1), out=out)
            out.exp_().mul_(gce3[b, lo:hi].unsqueeze(-1))  # g_ce·softmax(z)
        else:  # low precision: softmax in float32, rounded once
            soft = z3[b, lo:hi].to(lse.dtype).sub_(lse3[b, lo:hi].unsqueeze(-1)).exp_()
            out.copy_(soft.mul_(gce3[b, lo:hi].unsqueeze(-1)))
        if part is not None:
            out.masked_fill_(~part.unsqueeze(-1), 0.0)
        done[b, lo:hi] = True
    if not bool(done.all()):
        g3[~done.to(g3.device)] = 0.0  # fully masked blocks


def _tail_softmax_grad(g3: Tensor, z3: Tensor, m3: Tensor, lse: Tensor, lse_tail: Tensor,
                       ids: Tensor, g_ce: Tensor | None, g_tail: Tensor) -> None:
    """``g3 = g_ce·softmax(z) + g_tail·∂lse_tail/∂z`` on unmasked rows, 0 elsewhere.

    ``∂lse_tail/∂z_v = exp(z_v − lse_tail)`` off the ids and 0 on them. Written without
    cancellation: off the ids ``exp(z_v − lse_tail)·(g_ce·q_tail + g_tail)`` with
    ``q_tail = exp(lse_tail − lse) ≤ 1``, then the k entries on the ids overwritten with
    ``g_ce·exp(z_v − lse)``.
    """
    shape = m3.shape
    g_ce = torch.zeros_like(lse) if g_ce is None else g_ce
    finite = torch.isfinite(lse_tail)
    safe_tail = torch.where(finite, lse_tail, lse)  # an empty tail: no tail term
    g_tail = torch.where(finite & m3.view(lse.shape), g_tail, 0.0)
    g_ce = torch.where(m3.view(lse.shape), g_ce, 0.0)
    off = (g_ce * (safe_tail - lse).exp() + g_tail).reshape(shape)  # coefficient off the ids
    lse3, tail3, gce3 = lse.reshape(shape), safe_tail.reshape(shape), g_ce.reshape(shape)
    ids3 = ids.reshape(*shape, ids.shape[-1])
    g3.zero_()
    for b, lo, hi, part in _blocks(m3, _block_rows(z3.shape[-1])):
        zb = z3[b, lo:hi].to(lse.dtype)
        val = (zb - tail3[b, lo:hi].unsqueeze(-1)).exp_().mul_(off[b, lo:hi].unsqueeze(-1))
        on = (zb.gather(-1, ids3[b, lo:hi]) - lse3[b, lo:hi].unsqueeze(-1)).exp_()
        val.scatter_(-1, ids3[b, lo:hi], on.mul_(gce3[b, lo:hi].unsqueeze(-1)))
        if part is not None:
            val.masked_fill_(~part.unsqueeze(-1), 0.0)
        g3[b, lo:hi] = val


def ce_and_gather(
    logits: Tensor, labels: Tensor, mask: Tensor, ids: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Per-token cross-entropy ``(...)`` and, if ``ids`` is given, the logits gathered at them.

    ``CE_t = logsumexp(logits_t) − logits_t[labels_t]`` where ``mask_t`` (0 elsewhere), computed in
    float32 (float64 kept) from raw logits ``(..., V)`` of any float dtype; ``ids (..., k)`` int64
    gives ``logits.gather(-1, ids)`` ``(..., k)`` in the same precision. Differentiable in
    ``logits`` with an analytic backward that allocates only the ``(..., V)`` gradient. ``labels``
    must be valid ids where ``mask`` is True (other entries are ignored). Reference: the usual
    softmax cross-entropy gradient ``softmax(z) − onehot(y)`` (e.g. Liger-Kernel's fused CE).
    End points: all positions masked → CE 0 everywhere and a zero gradient (except via ``ids``).

    >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
    >>> ce, zs = ce_and_gather(z, torch.tensor([0, 1]), torch.tensor([True, False]), torch.tensor([[1], [2]]))
    >>> bool(torch.allclose(ce[0], -torch.log_softmax(z[0], -1)[0])), float(ce[1]), zs.tolist()
    (True, 0.0, [[0.0], [0.0]])
    """
    safe_y = torch.where(mask, labels, 0)
    ce, z_s, _ = _CEGather.apply(logits, safe_y, mask, None if ids is None else ids.long(), False)
    return ce, (z_s if ids is not None else None)


def ce_gather_tail(logits: Tensor, labels: Tensor, mask: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ce_and_gather` plus the student's tail: ``logsumexp`` of the logits *outside* ``ids``.

    Returns ``(ce (...), z_S (..., k), lse_tail (...))``; ``lse_tail − logsumexp(logits)`` is the
    log of the student's mass outside the k ids at τ = 1, summed directly (no ``1 − q(S)``
    cancellation). Ids may repeat within a position (a repeat removes nothing more). End points:
    ids covering the vocabulary → ``lse_tail = −inf`` and no gradient through it; masked
    positions → 0. Same single vocabulary-sized pass forward and the one ``(..., V)`` gradient
    buffer backward as :func:`ce_and_gather`.

    >>> z = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    >>> ce, zs, tail = ce_gather_tail(z, torch.tensor([2]), torch.tensor([True]), torch.tensor([[2]]))
    >>> bool(torch.allclose(tail, torch.logsumexp(z[:, :2], -1)))
    True
    """
    safe_y = torch.where(mask, labels, 0)
    return _CEGather.apply(logits, safe_y, mask, ids.long(), True)
