"""Sparse (top-k) teacher targets: k = V equals dense; re-tempering; the tail bucket."""

import math

import pytest
import torch

from reference.kd_reference import ref_bucket_kd_loss
from spectrumkd import SpectrumKDError
from spectrumkd.losses import (
    DIVERGENCES,
    kd_loss,
    retemper,
    sparse_kd_loss,
    teacher_tail,
    topk_teacher,
)


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


def test_tail_none_is_the_conditional_distribution_and_finite_for_all():
    s, t, y = _inputs(seed=3)
    ids, lp = topk_teacher(t, 8)
    for name in DIVERGENCES:
        out = sparse_kd_loss(s, ids, lp, y, divergence=name, temperature=1.5, ce_weight=0.0,
                             tail="none")
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
    one = sparse_kd_loss(s, *topk_teacher(t, 1), y, divergence="rkl", ce_weight=0.0, tail="none")
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


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_bucket_matches_float64_reference_values_and_gradients(name, tau):
    s, t, y = _inputs(seed=5)
    ids, lp = topk_teacher(t, 8)
    kw = dict(divergence=name, temperature=tau, ce_weight=0.3, skew=0.2, teacher_weight=0.4)
    x = s.clone().requires_grad_()
    out = sparse_kd_loss(x, ids, lp, y, **kw)
    out.total.backward()
    r = s.double().requires_grad_()
    ref = ref_bucket_kd_loss(r, t, ids, y, **kw)
    ref["total"].backward()
    torch.testing.assert_close(out.kd.double(), ref["kd"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.total.double(), ref["total"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), r.grad, rtol=1e-4, atol=1e-7)


def test_exact_cached_tail_equals_the_derived_one_and_gradcheck():
    s, t, y = _inputs(seed=6, shape=(2, 7, 23))
    ids, lp = topk_teacher(t.double(), 5)
    tail = teacher_tail(t.double(), ids)
    torch.testing.assert_close(tail.exp(), 1 - lp.exp().sum(-1), rtol=1e-9, atol=1e-12)

    def fn(x):
        return sparse_kd_loss(x, ids, lp, y, teacher_tail=tail, divergence="jsd", temperature=2.0).total

    assert torch.autograd.gradcheck(fn, (s.double().requires_grad_(),))
    a = sparse_kd_loss(s, ids.float().long(), lp.float(), y, divergence="fkl").total
    b = sparse_kd_loss(s, ids, lp.float(), y, teacher_tail=tail.float(), divergence="fkl").total
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _toy(tau, tail="bucket", steps=400):
    """Issue 17's toy: 64 positions, V = 256, teacher ~ N(0, 3²), top-16, pure fkl, Adam 400 steps."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 256, generator=g) * 3
    ids, lp = topk_teacher(t, 16)
    s = torch.zeros(64, 256, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.1)
    y = torch.zeros(64, dtype=torch.long)
    for _ in range(steps):
        opt.zero_grad()
        sparse_kd_loss(s, ids, lp, y, divergence="fkl", ce_weight=0.0, temperature=tau, tail=tail).total.backward()
        opt.step()

    def kl(student):
        lp_t, lq = torch.log_softmax(t.double(), -1), torch.log_softmax(student.double(), -1)
        return float((lp_t.exp() * (lp_t - lq)).sum(-1).mean())

    p_s = torch.softmax(t.double(), -1).gather(-1, ids).sum(-1)
    q_s = torch.softmax(s.detach().double(), -1).gather(-1, ids).sum(-1)
    return kl(s.detach()) / kl(torch.zeros(64, 256)), float((p_s - q_s).abs().mean())


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_toy_bucket_matches_the_teacher_over_the_whole_vocabulary(tau):
    # Dense KD drives this KL to ~0; the bucket leaves only the tail's shape (unknown to a cache).
    ratio, gap = _toy(tau)
    assert ratio <= 0.25 and gap <= 0.05, (ratio, gap)
    ratio_none, gap_none = _toy(tau, tail="none")  # the conditioned objective: the tail is free
    assert ratio_none > 0.5 and gap_none > 0.5, (ratio_none, gap_none)


def test_tau_two_against_dense():
    # Re-tempering the bucket as one token is exact when each model's tail is (numerically) a
    # single token: then it equals dense KD at τ = 2. Elsewhere the S-vs-tail split is approximate,
    # but the objective is still 0 (a minimum) at student = teacher and positive elsewhere.
    s, t, y = _inputs(seed=7)
    keep = torch.zeros_like(t, dtype=torch.bool).scatter(-1, t.topk(9, -1).indices, True)
    t1 = torch.where(keep, t, -60.0)  # the teacher's top-8 plus one tail token
    s1 = torch.where(keep, s, -60.0)
    ids, lp = topk_teacher(t1, 8)
    ids2, lp2 = topk_teacher(t, 8)
    for name in DIVERGENCES:
        kw = dict(divergence=name, temperature=2.0, ce_weight=0.0)
        dense = kd_loss(s1, t1, y, **kw).total
        torch.testing.assert_close(sparse_kd_loss(s1, ids, lp, y, **kw).total, dense, rtol=1e-4, atol=1e-5)
        x = t.clone().requires_grad_()
        zero = sparse_kd_loss(x, ids2, lp2, y, **kw).total
        zero.backward()
        assert abs(zero.item()) < 1e-5
        assert name == "tvd" or x.grad.abs().max().item() < 1e-5  # |·| has no gradient at 0
        assert float(sparse_kd_loss(s, ids2, lp2, y, **kw).total) > 1e-3


@pytest.mark.parametrize("name", DIVERGENCES)
def test_bucket_stays_finite_at_the_extremes(name):
    # The top-k sums to 1 in float32 (teacher tail floored), and a student with ~no tail mass.
    s, t, y = _inputs(seed=8)
    ids, lp = topk_teacher(t * 60, 8)
    x = (s * 60).clone().requires_grad_()
    out = sparse_kd_loss(x, ids, lp, y, divergence=name, temperature=2.0)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(x.grad).all()
    cold = torch.full_like(s, -1e4).scatter(-1, ids, 0.0).requires_grad_()  # tail mass e^-1e4
    out = sparse_kd_loss(cold, *topk_teacher(t, 8), y, divergence=name, temperature=0.5)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(cold.grad).all()
