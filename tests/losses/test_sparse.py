"""Sparse (top-k) teacher targets: k = V equals dense; re-tempering; the tail handling."""

import math

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.losses import DIVERGENCES, kd_loss, retemper, sparse_kd_loss, topk_teacher


def _inputs(seed=0, shape=(2, 11, 97)):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g) * 2
    t = torch.randn(*shape, generator=g) * 2
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    y[:, :3] = -100
    return s, t, y


@pytest.mark.parametrize("name", DIVERGENCES)
def test_k_equals_vocab_is_dense(name):
    s, t, y = _inputs()
    kw = dict(divergence=name, temperature=2.0, ce_weight=0.3, skew=0.2, teacher_weight=0.4)
    x1 = s.clone().requires_grad_()
    ref = kd_loss(x1, t, y, **kw)
    ref.total.backward()
    ids, lp = topk_teacher(t, t.shape[-1])
    perm = torch.randperm(ids.shape[-1], generator=torch.Generator().manual_seed(1))
    ids, lp = ids[..., perm], lp[..., perm]  # order must not matter
    x2 = s.clone().requires_grad_()
    out = sparse_kd_loss(x2, ids, lp, y, **kw)
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.kd, ref.kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-8)


def test_retemper_is_exact_on_the_support():
    _, t, _ = _inputs(seed=2)
    ids, lp = topk_teacher(t, 10)
    for tau in (0.5, 1.0, 2.0):
        direct = torch.log_softmax(t.gather(-1, ids) / tau, -1)
        torch.testing.assert_close(retemper(lp, tau), direct, rtol=1e-5, atol=1e-5)


def test_topk_is_the_conditional_distribution_and_finite_for_all():
    s, t, y = _inputs(seed=3)
    ids, lp = topk_teacher(t, 8)
    for name in DIVERGENCES:
        out = sparse_kd_loss(s, ids, lp, y, divergence=name, temperature=1.5, ce_weight=0.0)
        # equals the dense objective on the gathered logits (conditioning both on the support)
        ref = kd_loss(
            s.gather(-1, ids),
            t.gather(-1, ids),
            y.clamp(max=7).masked_fill(y == -100, -100),
            divergence=name,
            temperature=1.5,
            ce_weight=0.0,
        )
        torch.testing.assert_close(out.kd, ref.kd, rtol=1e-5, atol=1e-6)
        assert torch.isfinite(out.total)
    # k = 1: one-point distributions, every divergence is 0
    one = sparse_kd_loss(s, *topk_teacher(t, 1), y, divergence="rkl", ce_weight=0.0)
    assert abs(one.total.item()) < 1e-6


def test_padding_with_neg_inf_and_errors():
    s, t, y = _inputs(seed=4)
    ids, lp = topk_teacher(t, 6)
    lp = lp.clone()
    lp[..., -2:] = -math.inf  # a cache may pad short rows
    x = s.clone().requires_grad_()
    out = sparse_kd_loss(x, ids, lp, y, divergence="jsd", temperature=2.0)
    out.total.backward()
    assert torch.isfinite(out.total) and not torch.isnan(x.grad).any()
    ref = sparse_kd_loss(s, ids[..., :4], lp[..., :4], y, divergence="jsd", temperature=2.0)
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    with pytest.raises(SpectrumKDError, match="must both be"):
        sparse_kd_loss(s, ids[..., :3], lp, y)
