"""Chunked and fused paths equal the dense objective, in values and gradients."""

import math
import warnings

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.losses import DIVERGENCES, KDObjective, chunked_kd_loss, fused_kd_loss, kd_loss

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


def _row_rel(a, ref):
    """max over rows of max|a − ref| / max|ref| (per token row, so no row hides behind a big one)."""
    d = (a.double() - ref).abs()
    return float((d.amax(-1) / ref.abs().amax(-1).clamp_min(1e-300)).max())


def _scale_rel(a, ref):
    """max|a − ref| / max|ref| over the whole tensor."""
    return float((a.double() - ref).abs().max() / ref.abs().max())


def test_log_probs_are_float32_accurate():
    """z − logsumexp(z): one rounding of z plus one of the logsumexp (~3e-6 at |z| ≤ 25);
    torch.log_softmax's CPU kernel measured 8e-6 here (issue 13)."""
    from spectrumkd.losses.chunked import _log_probs

    z = torch.randn(32, 49152, generator=torch.Generator().manual_seed(10)) * 5.0
    err = (_log_probs(z, 1.0).double() - torch.log_softmax(z.double(), -1)).abs().max()
    assert float(err) <= 4e-6
    err_tau = (_log_probs(z, 2.0).double() - torch.log_softmax(z.double() / 2, -1)).abs().max()
    assert float(err_tau) <= 4e-6


def test_float32_gradients_match_float64_at_vocab_49152():
    """Issue 13.5: chunked and fused float32 gradients within 2e-5 of float64 at vocab 49,152.

    Per token row for the logits and hidden-state gradients. The LM-head gradient is compared at the
    tensor's scale: its rows are sums over tokens of signed products (a float32 matmul), whose own
    cancellation (~3e-5 per row here, the same for plain autograd) is not the loss's error.
    """
    n, vocab, hidden = 128, 49152, 64
    g = torch.Generator().manual_seed(11)
    h = torch.randn(n, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g) * (5.0 / hidden**0.5)  # logits of scale ~5
    t = torch.randn(n, vocab, generator=g) * 5.0
    y = torch.randint(0, vocab, (n,), generator=g)
    kw = dict(divergence="jsd", temperature=2.0, ce_weight=0.3, teacher_weight=0.5)
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    z64 = h64 @ w64.T
    z64.retain_grad()
    kd_loss(z64, t.double(), y, **kw).total.backward()
    x = (h @ w.T).requires_grad_()
    chunked_kd_loss(x, t, y, chunk_size=7, **kw).total.backward()
    assert _row_rel(x.grad, z64.grad) <= 2e-5
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    fused_kd_loss(h2, w2, y, teacher_logits=t, chunk_size=7, **kw).total.backward()
    assert _row_rel(h2.grad, h64.grad) <= 2e-5
    assert _scale_rel(w2.grad, w64.grad) <= 2e-5


@pytest.fixture
def fresh_compile_state():
    from spectrumkd.losses import chunked

    chunked._compiled_holder.cache_clear()
    yield chunked
    chunked._compiled_holder.cache_clear()


def test_compiled_equals_eager(fresh_compile_state):
    s, t, y = _inputs(shape=(2, 37, 301), seed=12)
    kw = dict(divergence="jsd", temperature=2.0, ce_weight=0.3, teacher_weight=0.3)
    x1, x2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    eager = chunked_kd_loss(x1, t, y, chunk_size=9, **kw)
    eager.total.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn: fail instead
        comp = chunked_kd_loss(x2, t, y, chunk_size=9, compiled=True, **kw)
        comp.total.backward()
        h, w = (
            s[0, :, :16].contiguous(),
            torch.randn(301, 16, generator=torch.Generator().manual_seed(1)),
        )
        h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
        fused_kd_loss(h1, w, y[0], teacher_logits=t[0], chunk_size=9, **kw).total.backward()
        fused_kd_loss(
            h2, w, y[0], teacher_logits=t[0], chunk_size=9, compiled=True, **kw
        ).total.backward()
    assert fresh_compile_state._compiled_holder()["fn"] is not None  # really compiled
    torch.testing.assert_close(comp.total, eager.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_compiled_two_pass_equals_dense_for_every_divergence(fresh_compile_state, name):
    """The compiled path's two passes (row statistics, then the gradient written over the chunk's
    logits) give the dense values and gradients for each formula, with partially masked chunks
    and τ = 1 (where CE reuses the tempered log-sum-exp)."""
    h, w, ht, wt, y = _fused_inputs(seed=15, n=(2, 19), vocab=211)
    kw = dict(divergence=name, temperature=1.0, ce_weight=0.2, skew=0.3, teacher_weight=0.6)
    s, t = h @ w.T, ht @ wt.T
    ref, g_ref = _dense(s, t, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn: fail
        x = s.clone().requires_grad_()
        out = chunked_kd_loss(x, t, y, chunk_size=5, compiled=True, **kw)
        out.total.backward()
        h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
        fused = fused_kd_loss(h2, w2, y, teacher_hidden=ht, teacher_lm_head_weight=wt,
                              chunk_size=5, compiled=True, **kw)  # fmt: skip
        fused.total.backward()
    h_ref, w_ref = h.clone().requires_grad_(), w.clone().requires_grad_()
    kd_loss(h_ref @ w_ref.T, t, y, **kw).total.backward()
    for got in (out, fused):
        torch.testing.assert_close(got.total, ref.total, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.ce, ref.ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(h2.grad, h_ref.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w2.grad, w_ref.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("when", ["compile", "first_call"])
def test_compile_failure_falls_back_with_one_warning(fresh_compile_state, monkeypatch, when):
    chunked = fresh_compile_state

    def broken_compile(fn):
        if when == "compile":
            raise RuntimeError("no C++ compiler found")

        def run(*args):
            raise RuntimeError("inductor codegen failed")

        return run

    monkeypatch.setattr(chunked, "_compile", broken_compile)
    s, t, y = _inputs(shape=(2, 9, 101), seed=13)
    ref, g_ref = _dense(s, t, y, divergence="rkl")
    x = s.clone().requires_grad_()
    with pytest.warns(RuntimeWarning, match="using the eager path.*(no C\\+\\+ compiler|codegen)"):
        out = chunked_kd_loss(x, t, y, divergence="rkl", chunk_size=4, compiled=True)
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-4, atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        chunked_kd_loss(s, t, y, divergence="rkl", chunk_size=4, compiled=True)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_chunked_and_fused_equal_dense_with_objective(name):
    """``objective=KDObjective(...)`` takes the same paths as the keyword form: chunked == dense."""
    h, w, ht, wt, y = _fused_inputs(seed=14, n=(2, 23), vocab=301)
    obj = KDObjective(name, temperature=1.5, ce_weight=0.2, skew=0.3, teacher_weight=0.6)
    s, t = h @ w.T, ht @ wt.T
    ref, g_ref = _dense(s, t, y, objective=obj)
    kw_ref, _ = _dense(s, t, y, **obj.kwargs())
    assert torch.equal(ref.total, kw_ref.total)
    x = s.clone().requires_grad_()
    out = chunked_kd_loss(x, t, y, objective=obj, chunk_size=5)
    out.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.kd, ref.kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-4, atol=1e-8)
    x2 = s.clone().requires_grad_()
    via_kd = kd_loss(x2, t, y, objective=obj, chunk_size=5)
    assert torch.equal(via_kd.total, out.total)
    h2 = h.clone().requires_grad_()
    fused = fused_kd_loss(h2, w, y, teacher_hidden=ht, teacher_lm_head_weight=wt, objective=obj,
                          chunk_size=7)  # fmt: skip
    fused.total.backward()
    torch.testing.assert_close(fused.total, ref.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h2.grad, g_ref @ w, rtol=1e-4, atol=1e-7)
    with pytest.raises(SpectrumKDError, match="not both"):
        fused_kd_loss(h, w, y, teacher_logits=t, objective=obj, divergence="fkl")
