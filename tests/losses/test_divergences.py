"""Per-token divergences: properties, end points, float64 reference, gradcheck, −inf safety."""

import math

import pytest
import torch

from reference.kd_reference import ref_divergence
from spectrumkd import SpectrumKDError
from spectrumkd.losses import (
    DIVERGENCES,
    divergence,
    divergence_and_grad,
    divergence_from_log_probs,
    divergences,
    forward_kl,
    jensen_shannon,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)

PARAMS = [(n, s, b) for n in DIVERGENCES for (s, b) in [(0.1, 0.5)]] + [
    ("jsd", 0.1, 0.1),
    ("jsd", 0.1, 0.9),
    ("skl", 0.5, 0.5),
    ("srkl", 0.5, 0.5),
]


def _logits(*shape, seed=0, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_identity_is_zero(name, tau):
    x = _logits(5, 7, 33)
    d = divergence(name, x, x.clone(), temperature=tau)
    assert d.shape == (5, 7)
    assert torch.allclose(d, torch.zeros_like(d), atol=1e-6)


@pytest.mark.parametrize(("name", "skew", "beta"), PARAMS)
def test_non_negative_and_matches_float64_reference(name, skew, beta):
    s, t = _logits(4, 9, 50, seed=1), _logits(4, 9, 50, seed=2)
    d = divergence(name, s, t, temperature=1.5, skew=skew, teacher_weight=beta)
    assert d.dtype == torch.float32
    assert (d >= -1e-6).all()
    assert (d > 1e-3).all()  # random distributions do differ: the test can fail
    ref = ref_divergence(name, s, t, temperature=1.5, skew=skew, teacher_weight=beta)
    torch.testing.assert_close(d.double(), ref, rtol=1e-5, atol=1e-6)


def test_jsd_symmetric_at_half_and_bounded():
    s, t = _logits(6, 40, seed=3), _logits(6, 40, seed=4)
    a = divergence("jsd", s, t, teacher_weight=0.5)
    b = divergence("jsd", t, s, teacher_weight=0.5)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert (a <= math.log(2) + 1e-6).all()
    assert not torch.allclose(
        divergence("jsd", s, t, teacher_weight=0.2), divergence("jsd", t, s, teacher_weight=0.2)
    )


def test_beta_end_points_are_exactly_fkl_and_rkl():
    s, t = _logits(3, 5, 20, seed=5), _logits(3, 5, 20, seed=6)
    assert torch.equal(divergence("jsd", s, t, teacher_weight=0.0), divergence("fkl", s, t))
    assert torch.equal(divergence("jsd", s, t, teacher_weight=1.0), divergence("rkl", s, t))
    # ... and the interior approaches them continuously only after rescaling, so 1e-6 is near 0:
    assert divergence("jsd", s, t, teacher_weight=1e-6).max() < 1e-4


def test_skew_to_zero_is_plain_kl_and_one_is_zero():
    s, t = _logits(3, 5, 20, seed=7), _logits(3, 5, 20, seed=8)
    assert torch.equal(divergence("skl", s, t, skew=0.0), divergence("fkl", s, t))
    assert torch.equal(divergence("srkl", s, t, skew=0.0), divergence("rkl", s, t))
    # the limit s → 0 is continuous (float64 so that the tiny mixture weight is resolved)
    s64, t64 = s.double(), t.double()
    for name, plain in [("skl", "fkl"), ("srkl", "rkl")]:
        gaps = [
            (divergence(name, s64, t64, skew=k) - divergence(plain, s64, t64)).abs().max()
            for k in (1e-2, 1e-6, 1e-14)
        ]
        assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-6
    assert divergence("skl", s, t, skew=1.0).abs().max() == 0
    assert divergence("srkl", s, t, skew=1.0).abs().max() == 0


@pytest.mark.parametrize(("name", "skew", "beta"), PARAMS)
def test_gradcheck_float64_both_arguments(name, skew, beta):
    s = _logits(2, 3, 7, seed=9, dtype=torch.float64).requires_grad_()
    t = _logits(2, 3, 7, seed=10, dtype=torch.float64).requires_grad_()
    fn = lambda a, b: divergence(name, a, b, temperature=1.3, skew=skew, teacher_weight=beta)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (s, t), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "skew", "beta"), PARAMS)
def test_analytic_gradient_matches_autograd(name, skew, beta):
    s = _logits(4, 6, 31, seed=11, dtype=torch.float64).requires_grad_()
    t = _logits(4, 6, 31, seed=12, dtype=torch.float64)
    d = divergence(name, s, t, temperature=0.7, skew=skew, teacher_weight=beta)
    (g_auto,) = torch.autograd.grad(d.sum(), s)
    v, g, _ = divergence_and_grad(
        name, s.detach(), t, temperature=0.7, skew=skew, teacher_weight=beta
    )
    torch.testing.assert_close(v, d.detach())
    torch.testing.assert_close(g, g_auto, rtol=1e-9, atol=1e-10)


def _with_neg_inf(which: str):
    s, t = _logits(3, 4, 16, seed=13), _logits(3, 4, 16, seed=14)
    if which in ("both", "teacher"):
        t[..., :5] = -math.inf
    if which in ("both", "student"):
        s[..., :5] = -math.inf
    if which == "mixed":
        t[..., :3] = -math.inf
        s[..., 2:6] = -math.inf
    return s, t


# Which −inf patterns keep each divergence finite (a KL is honestly +inf when its first argument has
# mass where its second has none); jsd/tvd/skl(s>0)/srkl(s>0) are always finite.
FINITE = {
    "fkl": ["both", "teacher"],
    "rkl": ["both", "student"],
    "jsd": ["both", "teacher", "student", "mixed"],
    "tvd": ["both", "teacher", "student", "mixed"],
    "skl": ["both", "teacher", "student", "mixed"],
    "srkl": ["both", "teacher", "student", "mixed"],
}


@pytest.mark.parametrize(("name", "which"), [(n, w) for n, ws in FINITE.items() for w in ws])
@pytest.mark.parametrize("beta", [0.5, 0.0, 1.0])
def test_neg_inf_logits_give_no_nan_values_or_gradients(name, which, beta):
    if (
        name == "jsd"
        and beta in (0.0, 1.0)
        and which not in ("both", FINITE["fkl" if beta == 0 else "rkl"][1])
    ):
        pytest.skip("jsd at β = 0/1 is fkl/rkl, infinite here by definition")
    s, t = _with_neg_inf(which)
    s.requires_grad_()
    t.requires_grad_()
    d = divergence(name, s, t, temperature=2.0, teacher_weight=beta)
    assert torch.isfinite(d).all()
    gs, gt = torch.autograd.grad(d.sum(), (s, t))
    assert not torch.isnan(gs).any() and not torch.isnan(gt).any()
    assert torch.isfinite(gs).all()
    v, g, _ = divergence_and_grad(
        name, s.detach(), t.detach(), temperature=2.0, teacher_weight=beta
    )
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, gs, rtol=1e-4, atol=1e-6)
    # the reference agrees where it is defined
    ref = ref_divergence(name, s.detach(), t.detach(), temperature=2.0, teacher_weight=beta)
    torch.testing.assert_close(d.detach().double(), ref, rtol=1e-5, atol=1e-6)


def test_genuinely_infinite_kl_is_inf_not_nan():
    s, t = _with_neg_inf("student")
    d = divergence("fkl", s, t)
    assert torch.isinf(d).all() and not torch.isnan(d).any()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("name", DIVERGENCES)
def test_low_precision_inputs_computed_in_float32(name, dtype, tol):
    s32, t32 = _logits(4, 8, 64, seed=15), _logits(4, 8, 64, seed=16)
    s, t = s32.to(dtype), t32.to(dtype)
    d = divergence(name, s, t)
    assert d.dtype == torch.float32
    # exactly the float32 computation on the rounded inputs ...
    torch.testing.assert_close(d.double(), ref_divergence(name, s, t), rtol=1e-5, atol=1e-6)
    # ... and within the dtype's rounding of the full-precision answer
    torch.testing.assert_close(d.double(), ref_divergence(name, s32, t32), rtol=tol, atol=tol)


def test_errors_are_clear():
    x = torch.zeros(2, 5)
    with pytest.raises(SpectrumKDError, match="unknown divergence"):
        divergence("kl", x, x)
    with pytest.raises(SpectrumKDError, match="shared_vocab_logits"):
        divergence("fkl", x, torch.zeros(2, 6))
    with pytest.raises(SpectrumKDError, match="teacher_weight"):
        divergence("jsd", x, x, teacher_weight=1.5)
    with pytest.raises(SpectrumKDError, match="temperature"):
        divergence("fkl", x, x, temperature=0.0)


# --- the table: one formula per name, end points resolved in one place -----------------------


def test_table_has_one_entry_per_name_in_order():
    assert tuple(divergences._FORMULAS) == DIVERGENCES


NAMED = {
    "fkl": lambda s, t, **kw: forward_kl(s, t, temperature=kw["temperature"]),
    "rkl": lambda s, t, **kw: reverse_kl(s, t, temperature=kw["temperature"]),
    "jsd": lambda s, t, **kw: jensen_shannon(
        s, t, temperature=kw["temperature"], teacher_weight=kw["teacher_weight"]
    ),
    "tvd": lambda s, t, **kw: total_variation(s, t, temperature=kw["temperature"]),
    "skl": lambda s, t, **kw: skew_forward_kl(s, t, temperature=kw["temperature"], skew=kw["skew"]),
    "srkl": lambda s, t, **kw: skew_reverse_kl(s, t, temperature=kw["temperature"], skew=kw["skew"]),
}


@pytest.mark.parametrize(("name", "skew", "beta"), PARAMS)
def test_named_functions_are_the_table(name, skew, beta):
    s, t = _logits(3, 4, 40, seed=21), _logits(3, 4, 40, seed=22)
    kw = dict(temperature=1.5, skew=skew, teacher_weight=beta)
    named = NAMED[name](s, t, **kw)
    assert torch.equal(named, divergence(name, s, t, **kw))
    lq = torch.log_softmax(s / 1.5, -1)
    lp = torch.log_softmax(t / 1.5, -1)
    assert torch.equal(named, divergence_from_log_probs(name, lq, lp, skew=skew, teacher_weight=beta))


END_POINTS = [  # (name, skew, teacher_weight) → the plain divergence it is exactly
    ("jsd", 0.1, 0.0, "fkl"),
    ("jsd", 0.1, 1.0, "rkl"),
    ("skl", 0.0, 0.5, "fkl"),
    ("srkl", 0.0, 0.5, "rkl"),
]


@pytest.mark.parametrize(("name", "skew", "beta", "plain"), END_POINTS)
def test_end_points_equal_the_named_divergences_in_both_columns(name, skew, beta, plain):
    """Value (autograd) and analytic gradient at the end points are exactly the plain KL's."""
    s, t = _logits(3, 5, 30, seed=23), _logits(3, 5, 30, seed=24)
    kw = dict(temperature=2.0, skew=skew, teacher_weight=beta)
    assert torch.equal(divergence(name, s, t, **kw), NAMED[plain](s, t, **kw))
    v, g, lq = divergence_and_grad(name, s, t, **kw)
    v0, g0, lq0 = divergence_and_grad(plain, s, t, temperature=2.0)
    assert torch.equal(v, v0) and torch.equal(g, g0) and torch.equal(lq, lq0)
    # just inside the end point the formula is the interior one (the test can fail):
    inside = dict(kw, skew=skew or 1e-3, teacher_weight=beta if name != "jsd" else abs(beta - 1e-3))
    assert not torch.equal(divergence(name, s, t, **inside), v0)


def test_skew_one_is_zero_in_both_columns():
    s, t = _logits(2, 3, 11, seed=25), _logits(2, 3, 11, seed=26)
    for name in ("skl", "srkl"):
        v, g, _ = divergence_and_grad(name, s, t, skew=1.0)
        assert v.abs().max() == 0 and g.abs().max() < 1e-6  # Σq = 1 up to rounding
