"""Chunked and fused paths equal the dense objective, in values and gradients."""

import math

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.losses import DIVERGENCES, chunked_kd_loss, fused_kd_loss, kd_loss

SHAPE = (3, 41, 1271)  # odd on purpose: chunks never divide the token count


def _inputs(shape=SHAPE, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(*shape, generator=g) * 2).to(dtype)
    t = (torch.randn(*shape, generator=g) * 2).to(dtype)
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    y[torch.rand(shape[:-1], generator=g) < 0.25] = -100
    return s, t, y


def _dense(s, t, y, **kw):
    x = s.clone().requires_grad_()
    out = kd_loss(x, t, y, **kw)
    out.total.backward()
    return out, x.grad


@pytest.mark.parametrize("name", DIVERGENCES)
def test_chunked_equals_dense(name):
    s, t, y = _inputs()
    kw = dict(divergence=name, temperature=2.0, ce_weight=0.3, skew=0.2, teacher_weight=0.3)
    ref, g_ref = _dense(s, t, y, **kw)
    x = s.clone().requires_grad_()
    out = kd_loss(x, t, y, chunk_size=17, **kw)
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.ce, ref.ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.kd, ref.kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-4, atol=1e-8)
    assert int(out.num_tokens) == int(ref.num_tokens)


@pytest.mark.parametrize(
    ("tau", "ce_w", "name"),
    [(1.0, 0.3, "fkl"), (1.0, 0.0, "rkl"), (2.0, 1.0, "jsd"), (1.0, 0.5, "none")],
)
def test_chunked_end_points(tau, ce_w, name):
    s, t, y = _inputs(shape=(2, 9, 101), seed=1)
    kw = dict(divergence=name, temperature=tau, ce_weight=ce_w)
    ref, g_ref = _dense(s, t, y, **kw)
    x = s.clone().requires_grad_()
    out = chunked_kd_loss(x, t, y, chunk_size=4, **kw)
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-4, atol=1e-8)


def test_chunked_scaled_upstream_gradient_and_all_masked():
    s, t, y = _inputs(shape=(2, 5, 33), seed=2)
    x = s.clone().requires_grad_()
    (3.0 * kd_loss(x, t, y, chunk_size=3).total).backward()
    _, g_ref = _dense(s, t, y)
    torch.testing.assert_close(x.grad, 3.0 * g_ref, rtol=1e-5, atol=1e-8)
    y[:] = -100
    x = s.clone().requires_grad_()
    out = kd_loss(x, t, y, chunk_size=3, divergence="srkl")
    out.total.backward()
    assert out.total.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("name", ["fkl", "srkl", "tvd"])
def test_chunked_gradcheck_float64(name):
    s, t, y = _inputs(shape=(2, 3, 7), seed=3)
    x = s.double().requires_grad_()
    fn = lambda a: kd_loss(a, t.double(), y, divergence=name, temperature=1.5, chunk_size=2).total  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_chunked_neg_inf_and_low_precision():
    s, t, y = _inputs(shape=(2, 7, 64), seed=4)
    s[..., :4] = -math.inf
    t[..., :4] = -math.inf
    y = torch.where(y == -100, y, y.clamp(min=4))  # a label on a -inf logit has CE = inf, honestly
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 1e-3), (torch.float16, 1e-3)]:
        sd, td = s.to(dtype), t.to(dtype)
        ref, g_ref = _dense(sd, td, y, divergence="jsd", temperature=2.0)
        x = sd.clone().requires_grad_()
        out = kd_loss(x, td, y, divergence="jsd", temperature=2.0, chunk_size=5)
        out.total.backward()
        assert torch.isfinite(out.total) and not torch.isnan(x.grad).any()
        assert x.grad.dtype == dtype
        torch.testing.assert_close(out.total, ref.total, rtol=tol, atol=tol)
        torch.testing.assert_close(x.grad.float(), g_ref.float(), rtol=1e-2, atol=tol)


def _fused_inputs(seed=0, n=(3, 41), hidden=24, vocab=1271, teacher_vocab=None):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*n, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g) / math.sqrt(hidden) * 3
    ht = torch.randn(*n, 2 * hidden, generator=g)
    wt = torch.randn(teacher_vocab or vocab, 2 * hidden, generator=g) / math.sqrt(2 * hidden) * 3
    y = torch.randint(0, vocab, n, generator=g)
    y[torch.rand(n, generator=g) < 0.25] = -100
    return h, w, ht, wt, y


@pytest.mark.parametrize("name", DIVERGENCES)
def test_fused_equals_dense(name):
    h, w, ht, wt, y = _fused_inputs()
    kw = dict(divergence=name, temperature=2.0, ce_weight=0.3, skew=0.2, teacher_weight=0.7)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = kd_loss(h1 @ w1.T, ht @ wt.T, y, **kw)
    ref.total.backward()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    out = fused_kd_loss(
        h2, w2, y, teacher_hidden=ht, teacher_lm_head_weight=wt, chunk_size=19, **kw
    )
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-7)
    # teacher given as logits: same answer
    h3 = h.clone().requires_grad_()
    out3 = fused_kd_loss(h3, w, y, teacher_logits=ht @ wt.T, chunk_size=64, **kw)
    out3.total.backward()
    torch.testing.assert_close(out3.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h3.grad, h1.grad, rtol=1e-4, atol=1e-7)


def test_fused_shared_vocab_slicing():
    """Teacher head padded to more rows (Qwen2.5 7B vs 1.5B): both cut to vocab_size."""
    h, w, ht, wt, y = _fused_inputs(seed=5, n=(2, 9), vocab=50, teacher_vocab=56)
    y = y.clamp(max=44)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = kd_loss((h1 @ w1.T)[..., :45], (ht @ wt.T)[..., :45], y, divergence="rkl")
    ref.total.backward()
    w2 = w.clone().requires_grad_()
    out = fused_kd_loss(
        h,
        w2,
        y,
        teacher_hidden=ht,
        teacher_lm_head_weight=wt,
        divergence="rkl",
        vocab_size=45,
        chunk_size=4,
    )
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(w2.grad[45:], torch.zeros_like(w2.grad[45:]))
    with pytest.raises(SpectrumKDError, match="vocab_size"):
        fused_kd_loss(h, w, y, teacher_hidden=ht, teacher_lm_head_weight=wt)


def test_fused_gradcheck_float64():
    h, w, ht, wt, y = _fused_inputs(seed=6, n=(2, 3), hidden=4, vocab=9)
    args = (h.double().requires_grad_(), w.double().requires_grad_())
    t = (ht @ wt.T).double()

    def fn(a, b):
        out = fused_kd_loss(
            a, b, y, teacher_logits=t, divergence="skl", temperature=2.0, chunk_size=2
        )
        return out.total

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def test_backward_twice_recomputes():
    s, t, y = _inputs(shape=(1, 3, 5), seed=7)
    x = s.clone().requires_grad_()
    out = kd_loss(x, t, y, chunk_size=2)
    out.total.backward(retain_graph=True)
    first = x.grad.clone()
    out.total.backward()
    torch.testing.assert_close(x.grad, 2 * first)
