"""ce_and_gather: one logsumexp for CE plus gathered logits, with an analytic gradient."""

import pytest
import torch

from spectrumkd.losses import kd_loss, sparse_kd_loss, topk_teacher
from spectrumkd.losses.cross_entropy import ce_and_gather


def _inputs(seed=0, shape=(3, 42, 211), k=9, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    full = (torch.randn(*shape, generator=g) * 3).to(dtype)
    y = torch.randint(0, shape[-1], (shape[0], shape[1] - 1), generator=g)
    y[:, :5] = -100
    y[1] = -100  # a fully masked sequence
    y[2, 20:23] = -100  # a masked span inside a response
    ids = torch.rand(shape[0], shape[1] - 1, shape[-1], generator=g).argsort(-1)[..., :k]
    return full, y, ids


def _reference(z, y, ids):
    """float64 autograd reference: log_softmax + gather."""
    mask = y != -100
    lq = torch.log_softmax(z.double(), -1)
    ce = torch.where(mask, -lq.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    return ce, z.double().gather(-1, ids)


@pytest.mark.parametrize("with_ce,with_ids", [(True, True), (True, False), (False, True)])
def test_values_and_gradients_match_float64_reference_on_shifted_views(with_ce, with_ids):
    full, y, ids = _inputs()
    w_ce = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w_zs = torch.randn(ids.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = full.clone().requires_grad_()
    ce, zs = ce_and_gather(a[:, :-1], y, y != -100, ids if with_ids else None)  # non-contiguous
    b = full.double().requires_grad_()
    ce_r, zs_r = _reference(b[:, :-1], y, ids)
    torch.testing.assert_close(ce.double(), ce_r, rtol=1e-5, atol=1e-5)
    assert (ce[1] == 0).all() and (ce[2, 20:23] == 0).all()
    if with_ids:
        torch.testing.assert_close(zs.double(), zs_r, rtol=0, atol=0)
    else:
        assert zs is None
    loss = (ce.double() * w_ce).sum() * with_ce + ((zs.double() * w_zs).sum() if with_ids else 0)
    loss_r = (ce_r * w_ce).sum() * with_ce + ((zs_r * w_zs).sum() if with_ids else 0)
    loss.backward()
    loss_r.backward()
    assert a.grad.dtype == torch.float32 and a.grad.shape == full.shape
    assert (a.grad[:, -1] == 0).all()
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


def test_gradcheck_float64():
    full, y, ids = _inputs(shape=(3, 26, 13), k=4, dtype=torch.float64)
    mask = y != -100

    def fn(x):
        ce, zs = ce_and_gather(x[:, :-1], y, mask, ids)
        return ce.sum() + (zs * 0.37).sum()

    assert torch.autograd.gradcheck(fn, (full.requires_grad_(),))


def test_low_precision_inputs():
    full, y, ids = _inputs(dtype=torch.bfloat16)
    a = full.clone().requires_grad_()
    ce, _ = ce_and_gather(a[:, :-1], y, y != -100)
    ce.sum().backward()
    b = full.double().requires_grad_()
    ce_r, _ = _reference(b[:, :-1], y, ids)
    ce_r.sum().backward()
    assert ce.dtype == torch.float32 and a.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ce.double(), ce_r, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=2e-2, atol=1e-2)


def test_sft_and_sparse_paths_equal_cross_entropy_and_dense():
    full, y, _ = _inputs(seed=3)
    a = full.clone().requires_grad_()
    out = kd_loss(a[:, :-1], None, y, divergence="none")
    out.total.backward()
    b = full.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(b[:, :-1].reshape(-1, full.shape[-1]), y.reshape(-1))
    ref.backward()
    torch.testing.assert_close(out.total, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    # pure KD (ce_weight 0: the CE is logged, not differentiated) on a shifted view, k = V
    t = torch.randn(full.shape, generator=torch.Generator().manual_seed(4))
    c = full.clone().requires_grad_()
    sp = sparse_kd_loss(c[:, :-1], *topk_teacher(t[:, :-1], full.shape[-1]), y, ce_weight=0.0)
    sp.total.backward()
    d = full.clone().requires_grad_()
    de = kd_loss(d[:, :-1], t[:, :-1], y, ce_weight=0.0)
    de.total.backward()
    torch.testing.assert_close(sp.total, de.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sp.ce, de.ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c.grad, d.grad, rtol=1e-4, atol=1e-7)


def _tail_reference(z, ids):
    return z.double().scatter(-1, ids, float("-inf")).logsumexp(-1)


def test_tail_values_and_gradients_match_float64_reference():
    from spectrumkd.losses.cross_entropy import ce_gather_tail

    full, y, ids = _inputs(seed=2)
    mask = y != -100
    w = [torch.randn(y.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in (7, 8)]
    a = full.clone().requires_grad_()
    ce, zs, tail = ce_gather_tail(a[:, :-1], y, mask, ids)
    b = full.double().requires_grad_()
    ce_r, zs_r = _reference(b[:, :-1], y, ids)
    tail_r = torch.where(mask, _tail_reference(b[:, :-1], ids), 0.0)
    torch.testing.assert_close(torch.where(mask, tail.double(), 0.0), tail_r, rtol=1e-6, atol=1e-5)
    loss = (ce.double() * w[0]).sum() + (torch.where(mask, tail.double(), 0.0) * w[1]).sum() + zs.double().sum()
    loss_r = (ce_r * w[0]).sum() + (tail_r * w[1]).sum() + zs_r.sum()
    loss.backward()
    loss_r.backward()
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


def test_tail_gradcheck_and_underflow():
    from spectrumkd.losses.cross_entropy import ce_gather_tail

    full, y, ids = _inputs(shape=(3, 26, 13), k=4, dtype=torch.float64)
    mask = y != -100

    def fn(x):
        ce, zs, tail = ce_gather_tail(x[:, :-1], y, mask, ids)
        return ce.sum() + (zs * 0.37).sum() + torch.where(mask, tail, 0.0).sum() * 0.5

    assert torch.autograd.gradcheck(fn, (full.requires_grad_(),))
    # a tail 1e4 nats below the maximum underflows in one exp pass; it is recomputed exactly
    z = torch.tensor([[5.0, -1e4, -1e4 - 1.0]])
    _, _, tail = ce_gather_tail(z, torch.tensor([0]), torch.tensor([True]), torch.tensor([[0]]))
    torch.testing.assert_close(tail, torch.logsumexp(z[:, 1:], -1))
