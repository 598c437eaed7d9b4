"""kd_loss: the paper's objective, reduction, masking, accumulation invariance, presets; KDObjective."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from reference.kd_reference import ref_kd_loss
from spectrumkd import SpectrumKDError
from spectrumkd.losses import (
    DIVERGENCES,
    KDObjective,
    kd_loss,
    preset,
    sparse_kd_loss,
    topk_teacher,
)
from spectrumkd.losses.objective import check_objective


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


# --- KDObjective: the one check of the loss parameters ---------------------------------------

BAD_OBJECTIVES = [
    ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ({"temperature": float("inf")}, "temperature must be a finite number"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1}, "temperature must be > 0"),
    ({"ce_weight": float("nan")}, "ce_weight must be a finite number"),
    ({"ce_weight": 1.5}, r"ce_weight must be in \[0, 1\], got 1.5"),
    ({"ce_weight": -0.1}, "ce_weight must be in"),
    ({"skew": float("nan")}, "skew must be a finite number"),
    ({"skew": 1.01}, "skew must be in"),
    ({"teacher_weight": float("-inf")}, "teacher_weight must be a finite number"),
    ({"teacher_weight": -0.5}, "teacher_weight must be in"),
    ({"temperature": "2"}, "temperature must be a number, got '2'"),
    ({"ce_weight": True}, "ce_weight must be a number"),
    ({"divergence": "kl"}, "unknown divergence 'kl': not one of none, fkl, rkl, jsd"),
    ({"divergence": "FKL"}, "unknown divergence"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_OBJECTIVES)
def test_objective_refuses_bad_values_in_one_line(fields, message):
    with pytest.raises(SpectrumKDError, match=message) as err:
        KDObjective(**fields)
    assert "\n" not in str(err.value)
    # ... and every loss entry point refuses them the same way, before any tensor work
    s, t, y = _batch(b=1, t=2, v=5)
    for call in (
        lambda: kd_loss(s, t, y, **fields),
        lambda: kd_loss(s, t, y, chunk_size=1, **fields),
        lambda: sparse_kd_loss(s, *topk_teacher(t, 2), y, **fields),
    ):
        with pytest.raises(SpectrumKDError, match=message):
            call()


def test_objective_stores_floats_is_frozen_and_weights():
    o = KDObjective("jsd", temperature=2, ce_weight=0, skew=0, teacher_weight=1)
    assert o.kwargs() == {"divergence": "jsd", "temperature": 2.0, "ce_weight": 0.0,
                          "skew": 0.0, "teacher_weight": 1.0}  # fmt: skip
    assert all(type(v) is float for k, v in o.kwargs().items() if k != "divergence")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.temperature = 3.0  # type: ignore[misc]
    assert o.kd_active and o.weights() == (0.0, 4.0)
    assert KDObjective(ce_weight=0.25, temperature=2.0).weights() == (0.25, 3.0)
    for sft in (KDObjective("none", ce_weight=0.0), KDObjective("fkl", ce_weight=1.0)):
        assert not sft.kd_active and sft.weights() == (1.0, 0.0)
    assert dataclasses.replace(o, temperature=1.5).temperature == 1.5
    with pytest.raises(SpectrumKDError, match="temperature"):
        dataclasses.replace(o, temperature=float("nan"))


def test_check_objective_names_the_config_field():
    with pytest.raises(SpectrumKDError, match=r"^loss\.ce_weight must be a finite number"):
        check_objective("fkl", 1.0, float("nan"), 0.1, 0.5, where="loss.")
    with pytest.raises(SpectrumKDError, match=r"^unknown loss\.divergence 'kl'"):
        check_objective("kl", 1.0, 0.3, 0.1, 0.5, where="loss.")


def test_from_config_reads_the_fields_it_finds():
    cfg = SimpleNamespace(mode="kd", divergence="srkl", ce_weight=0.2, skew=0.3, teacher_weight=0.5,
                          chunk_size=None)  # fmt: skip
    o = KDObjective.from_config(cfg, temperature=1.5)
    assert o == KDObjective("srkl", 1.5, 0.2, 0.3, 0.5)
    with pytest.raises(SpectrumKDError, match="skew"):
        KDObjective.from_config(SimpleNamespace(skew=2.0))


@pytest.mark.parametrize("name", [*DIVERGENCES, "none"])
def test_objective_argument_equals_keyword_form(name):
    s, t, y = _batch(seed=6)
    fields = dict(divergence=name, temperature=1.7, ce_weight=0.4, skew=0.2, teacher_weight=0.6)
    o = KDObjective(**fields)
    xa, xb = s.clone().requires_grad_(), s.clone().requires_grad_()
    a = kd_loss(xa, t, y, **fields)
    b = kd_loss(xb, t, y, objective=o)
    a.total.backward()
    b.total.backward()
    assert torch.equal(a.total, b.total) and torch.equal(a.kd, b.kd) and torch.equal(xa.grad, xb.grad)
    ids, lp = topk_teacher(t, 9)
    assert torch.equal(sparse_kd_loss(s, ids, lp, y, **fields).total,
                       sparse_kd_loss(s, ids, lp, y, objective=o).total)  # fmt: skip


def test_objective_and_fields_together_or_misspelt_are_refused():
    s, t, y = _batch()
    with pytest.raises(SpectrumKDError, match="not both"):
        kd_loss(s, t, y, objective=KDObjective(), temperature=2.0)
    with pytest.raises(SpectrumKDError, match="must be a KDObjective"):
        kd_loss(s, t, y, objective={"divergence": "fkl"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'.*'temperature'"):
        kd_loss(s, t, y, temprature=2.0)
    with pytest.raises(TypeError, match="sparse_kd_loss.*'beta'"):
        sparse_kd_loss(s, *topk_teacher(t, 3), y, beta=0.5)


def test_presets_are_objectives():
    o = preset("gkd")
    assert isinstance(o, KDObjective) and o.temperature == 1.0
    s, t, y = _batch(seed=7)
    tuned = dataclasses.replace(o, temperature=2.0)
    ref = kd_loss(s, t, y, temperature=2.0, **{k: v for k, v in o.kwargs().items()
                                                  if k != "temperature"})  # fmt: skip
    assert torch.equal(kd_loss(s, t, y, objective=tuned).total, ref.total)
