"""kd_loss: the paper's objective, reduction, masking, accumulation invariance, presets."""

import pytest
import torch

from reference.kd_reference import ref_kd_loss
from spectrumkd import SpectrumKDError
from spectrumkd.losses import DIVERGENCES, kd_loss, preset


def _batch(b=3, t=7, v=29, seed=0, masked=0.3):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, v, generator=g) * 2
    te = torch.randn(b, t, v, generator=g) * 2
    y = torch.randint(0, v, (b, t), generator=g)
    y[torch.rand(b, t, generator=g) < masked] = -100
    return s, te, y


@pytest.mark.parametrize("name", [*DIVERGENCES, "none"])
@pytest.mark.parametrize(("tau", "ce_w"), [(1.0, 0.3), (2.0, 0.3), (1.5, 0.0), (2.0, 1.0)])
def test_matches_float64_reference(name, tau, ce_w):
    s, t, y = _batch()
    out = kd_loss(
        s, t, y, divergence=name, temperature=tau, ce_weight=ce_w, skew=0.2, teacher_weight=0.3
    )
    ref = ref_kd_loss(
        s, t, y, divergence=name, temperature=tau, ce_weight=ce_w, skew=0.2, teacher_weight=0.3
    )
    for part in ("total", "ce"):
        torch.testing.assert_close(getattr(out, part).double(), ref[part], rtol=1e-5, atol=1e-6)
    if name != "none" and ce_w < 1:
        torch.testing.assert_close(out.kd.double(), ref["kd"], rtol=1e-5, atol=1e-6)
    assert int(out.num_tokens) == int((y != -100).sum())


def test_gradient_matches_float64_reference():
    s, t, y = _batch(seed=1)
    s64 = s.double().requires_grad_()
    ref = ref_kd_loss(s64, t, y, divergence="jsd", temperature=2.0, teacher_weight=0.1)["total"]
    (g_ref,) = torch.autograd.grad(ref, s64)
    s32 = s.clone().requires_grad_()
    kd_loss(s32, t, y, divergence="jsd", temperature=2.0, teacher_weight=0.1).total.backward()
    torch.testing.assert_close(s32.grad.double(), g_ref, rtol=1e-4, atol=1e-7)


def test_gradcheck_float64():
    s, t, y = _batch(b=2, t=3, v=6, seed=2)
    s = s.double().requires_grad_()
    fn = lambda x: kd_loss(x, t.double(), y, divergence="srkl", temperature=1.7).total  # noqa: E731
    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-6)


def test_all_masked_gives_zero_not_nan():
    s, t, y = _batch()
    y[:] = -100
    s.requires_grad_()
    out = kd_loss(s, t, y, divergence="rkl", temperature=2.0)
    assert out.total.item() == 0.0 and out.ce.item() == 0.0 and out.kd.item() == 0.0
    out.total.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_num_tokens_divides_and_accumulation_is_invariant():
    """batch 4 × accumulation 1 == batch 1 × accumulation 4 when num_tokens is the global count."""
    s, t, y = _batch(b=4, t=9, v=31, seed=3, masked=0.4)
    y[0, :7] = -100  # very different counts per sequence
    n = int((y != -100).sum())
    big = s.clone().requires_grad_()
    kd_loss(big, t, y, divergence="jsd", temperature=2.0, num_tokens=n).total.backward()
    small = s.clone().requires_grad_()
    acc = 0.0
    for i in range(4):
        part = kd_loss(
            small[i : i + 1],
            t[i : i + 1],
            y[i : i + 1],
            divergence="jsd",
            temperature=2.0,
            num_tokens=n,
        )
        part.total.backward()
        acc += part.total.item()
    torch.testing.assert_close(small.grad, big.grad, rtol=1e-5, atol=1e-8)
    assert abs(acc - kd_loss(s, t, y, divergence="jsd", temperature=2.0).total.item()) < 1e-5
    # local normalisation would *not* be invariant — the test can fail:
    local = (
        sum(kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1]).total.item() for i in range(4)) / 4
    )
    assert abs(local - kd_loss(s, t, y).total.item()) > 1e-3


def test_sft_without_teacher_and_parts():
    s, _, y = _batch()
    a = kd_loss(s, None, y, divergence="none")
    b = kd_loss(s, None, y, ce_weight=1.0)
    ce = torch.nn.functional.cross_entropy(s.reshape(-1, s.shape[-1]), y.reshape(-1))
    torch.testing.assert_close(a.total, ce)
    torch.testing.assert_close(b.total, ce)
    assert a.kd.item() == 0.0
    with pytest.raises(SpectrumKDError, match="needs teacher_logits"):
        kd_loss(s, None, y)


def test_total_is_weighted_sum_of_detached_parts():
    s, t, y = _batch(seed=4)
    s.requires_grad_()
    out = kd_loss(s, t, y, divergence="tvd", temperature=2.0, ce_weight=0.25)
    assert not out.ce.requires_grad and not out.kd.requires_grad and out.total.requires_grad
    torch.testing.assert_close(out.total, 0.25 * out.ce + 0.75 * 4.0 * out.kd)


def test_teacher_gets_no_gradient_and_low_precision():
    s, t, y = _batch(seed=5)
    tb = t.to(torch.bfloat16).requires_grad_()
    sb = s.to(torch.bfloat16).requires_grad_()
    out = kd_loss(sb, tb, y, divergence="skl")
    assert out.total.dtype == torch.float32
    out.total.backward()
    assert tb.grad is None and sb.grad.dtype == torch.bfloat16
    ref = ref_kd_loss(sb.detach(), tb.detach(), y, divergence="skl")["total"]
    torch.testing.assert_close(out.total.double(), ref, rtol=1e-5, atol=1e-6)


def test_presets_document_their_anchor():
    assert preset("distillm").kwargs()["divergence"] == "skl"
    assert preset("gkd").ce_weight == 0.0
    assert preset("distillm-jsd").teacher_weight == 0.1  # DistiLLM lam = 0.9 (docs/losses.md)
    s, t, y = _batch()
    assert torch.isfinite(kd_loss(s, t, y, **preset("minillm").kwargs()).total)
    with pytest.raises(SpectrumKDError, match="unknown KD preset"):
        preset("nope")


def test_argument_errors():
    s, t, y = _batch()
    with pytest.raises(SpectrumKDError, match="aligned"):
        kd_loss(s, t, y[:, :-1])
    with pytest.raises(SpectrumKDError, match="ce_weight"):
        kd_loss(s, t, y, ce_weight=1.5)
    with pytest.raises(SpectrumKDError, match="shared_vocab_logits"):
        kd_loss(s, t[..., :-1], y)
