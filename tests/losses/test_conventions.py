"""Each row of docs/losses.md: the peer's formula, re-implemented from its definition, on our inputs.

The peers' formulas are written here from their definitions (read, not copied; file and line in
each docstring, at the commits named in docs/losses.md) in float64 on probabilities, and compared
with spectrumkd.losses on the same logits, labels and weights. Where TRL is installed, its real
``generalized_jsd_loss`` is called too.
"""

from __future__ import annotations

import pytest
import torch

from spectrumkd.losses import kd_loss, preset

V = 37


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(13)
    s = (2.0 * torch.randn(2, 6, V, generator=g, dtype=torch.float64)).requires_grad_()
    t = 2.0 * torch.randn(2, 6, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (2, 6), generator=g)
    labels[0, :2] = -100
    labels[1, 5] = -100
    return s, t, labels


def _softmax(x, tau=1.0):
    return torch.softmax(x / tau, -1)


def _masked_mean(x, labels):
    """Σ over unmasked tokens / their count: every peer's per-batch token mean."""
    mask = (labels != -100).to(x.dtype)
    return (x * mask).sum() / mask.sum()


def _xlogy_sum(a, b):
    return torch.xlogy(a, b).sum(-1)


def _ours(name, s, t, labels, **kw):
    """Our per-token divergence, token-averaged (kd_loss with ce_weight 0, τ = 1: no τ² factor)."""
    return kd_loss(s, t, labels, divergence=name, ce_weight=0.0, **kw).total


def _grad(f, s):
    (g,) = torch.autograd.grad(f, s)
    return g


# --------------------------------------------------------------------------- TRL


def trl_generalized_jsd(s, t, labels, beta, temperature):
    """TRL ``GKDTrainer.generalized_jsd_loss`` (trl/experimental/gkd/gkd_trainer.py L238–317, TRL
    1.16.0): logits / τ, mixture m = β·p_teacher + (1−β)·q_student, β·KL(p‖m) + (1−β)·KL(q‖m),
    β = 0 → KL(p‖q), β = 1 → KL(q‖p); "batchmean" = Σ over unmasked tokens / their count; no τ²."""
    p, q = _softmax(t, temperature), _softmax(s, temperature)
    if beta == 0:
        d = _xlogy_sum(p, p) - _xlogy_sum(p, q)
    elif beta == 1:
        d = _xlogy_sum(q, q) - _xlogy_sum(q, p)
    else:
        m = beta * p + (1 - beta) * q
        d = beta * (_xlogy_sum(p, p) - _xlogy_sum(p, m)) + (1 - beta) * (_xlogy_sum(q, q) - _xlogy_sum(q, m))
    return _masked_mean(d, labels)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_trl_beta_is_our_teacher_weight_and_trl_has_no_tau_squared(batch, beta, tau):
    s, t, labels = batch
    theirs = trl_generalized_jsd(s, t, labels, beta, tau)
    ours = kd_loss(s, t, labels, divergence="jsd", teacher_weight=beta, temperature=tau,
                   ce_weight=0.0).total
    torch.testing.assert_close(ours, tau**2 * theirs, rtol=1e-10, atol=1e-12)  # τ² is ours only
    torch.testing.assert_close(_grad(ours, s), tau**2 * _grad(theirs, s), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_trls_real_generalized_jsd_loss(batch, beta):
    from spectrumkd.train.trl_adapters import gkd_trainer_class

    pytest.importorskip("trl", reason="TRL is not installed")
    gkd = gkd_trainer_class()
    if gkd is None:
        pytest.skip("this TRL has no GKD trainer")
    s, t, labels = batch
    real = gkd.generalized_jsd_loss(s.detach().float(), t.float(), labels=labels, beta=beta,
                                    temperature=2.0)
    ours = kd_loss(s.detach().float(), t.float(), labels, divergence="jsd", teacher_weight=beta,
                   temperature=2.0, ce_weight=0.0).total
    torch.testing.assert_close(ours, 4.0 * real, rtol=5e-6, atol=1e-7)


def test_trl_global_token_normalisation_is_our_num_tokens(batch):
    """TRL divides by ``num_items_in_batch`` (the accumulation window's tokens) when given (L305–310)."""
    s, t, labels = batch
    n = 25
    theirs = trl_generalized_jsd(s, t, labels, 0.5, 1.0) * (labels != -100).sum() / n
    ours = kd_loss(s, t, labels, divergence="jsd", ce_weight=0.0, num_tokens=n).total
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- Liger


def liger_fused_linear_jsd(s, t, labels, beta, temperature, weight_hard, weight_soft):
    """Liger ``LigerFusedLinearJSDFunction`` (src/liger_kernel/chunked_loss/jsd_loss.py L30–57 and
    fused_linear_distillation.py L119–147, commit ead96b61): hard = CE on the raw logits, soft = the
    TRL-convention generalized JSD on logits / τ, each Σ over valid tokens / their count, total
    ``weight_hard·hard + weight_soft·soft``; no τ²."""
    logq1 = torch.log_softmax(s, -1)
    safe = labels.clamp(min=0).unsqueeze(-1)
    hard = _masked_mean(-logq1.gather(-1, safe).squeeze(-1), labels)
    soft = trl_generalized_jsd(s, t, labels, beta, temperature)
    return weight_hard * hard + weight_soft * soft


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_liger_weights_match_ce_weight_only_with_soft_weight_times_tau_squared(batch, tau):
    s, t, labels = batch
    alpha = 0.3
    ours = kd_loss(s, t, labels, divergence="jsd", teacher_weight=0.5, temperature=tau,
                   ce_weight=alpha).total
    theirs = liger_fused_linear_jsd(s, t, labels, 0.5, tau, alpha, (1 - alpha) * tau**2)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    naive = liger_fused_linear_jsd(s, t, labels, 0.5, tau, alpha, 1 - alpha)
    assert (abs(float(ours - naive)) > 1e-3) is (tau != 1.0)


# --------------------------------------------------------------------------- DistiLLM


def distillm(name, s, t, labels, lam=None):
    """jongwooko/distillm ``distillm/losses.py`` (commit 17c0f98), on probabilities:
    ``forward_kl`` L4–12 −Σ p log q (CE form); ``reverse_kl`` L14–24 Σ q (log q − log p);
    ``js_distance(lam=0.9)`` L32–53 m = (1−lam)·p + lam·q, lam·KL(q‖m) + (1−lam)·KL(p‖m);
    ``tv_distance`` L55–64 ½Σ|p−q|; ``skewed_forward_kl(lam=0.1)`` L66–78 −Σ p log(lam·p + (1−lam)·q)
    (CE form); ``skewed_reverse_kl(lam=0.1)`` L80–95 Σ q (log q − log((1−lam)·p + lam·q)).
    Each is Σ over unmasked tokens / their count; no temperature (τ = 1)."""
    p, q = _softmax(t), _softmax(s)
    if name == "forward_kl":
        d = -_xlogy_sum(p, q)
    elif name == "reverse_kl":
        d = _xlogy_sum(q, q) - _xlogy_sum(q, p)
    elif name == "js_distance":
        m = (1 - lam) * p + lam * q
        d = lam * (_xlogy_sum(q, q) - _xlogy_sum(q, m)) + (1 - lam) * (_xlogy_sum(p, p) - _xlogy_sum(p, m))
    elif name == "tv_distance":
        d = 0.5 * (p - q).abs().sum(-1)
    elif name == "skewed_forward_kl":
        d = -_xlogy_sum(p, lam * p + (1 - lam) * q)
    elif name == "skewed_reverse_kl":
        d = _xlogy_sum(q, q) - _xlogy_sum(q, (1 - lam) * p + lam * q)
    return _masked_mean(d, labels)


def _teacher_entropy(t, labels):
    p = _softmax(t)
    return _masked_mean(-_xlogy_sum(p, p), labels)


@pytest.mark.parametrize(
    ("theirs", "lam", "ours", "kwargs", "ce_form"),
    [
        ("forward_kl", None, "fkl", {}, True),
        ("reverse_kl", None, "rkl", {}, False),
        ("js_distance", 0.9, "jsd", {"teacher_weight": 0.1}, False),  # β = 1 − lam
        ("js_distance", 0.3, "jsd", {"teacher_weight": 0.7}, False),
        ("tv_distance", None, "tvd", {}, False),
        ("skewed_forward_kl", 0.1, "skl", {"skew": 0.1}, True),  # skew = lam
        ("skewed_reverse_kl", 0.1, "srkl", {"skew": 0.1}, False),
    ],
)
def test_distillm_divergences(batch, theirs, lam, ours, kwargs, ce_form):
    s, t, labels = batch
    ref = distillm(theirs, s, t, labels, lam)
    value = _ours(ours, s, t, labels, **kwargs)
    offset = _teacher_entropy(t, labels) if ce_form else 0.0  # CE form = KL + H(p)
    torch.testing.assert_close(value + offset, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(value, s), _grad(ref, s), rtol=1e-9, atol=1e-12)  # same grads
    if ce_form:
        assert float(offset) > 0.1


def test_preset_distillm_jsd_is_what_distillm_finetune_calls(batch):
    """finetune.py L184 calls ``js_distance(logits, teacher_logits, no_model_batch)``: lam = 0.9."""
    s, t, labels = batch
    kw = preset("distillm-jsd").kwargs() | {"ce_weight": 0.0}
    ours = kd_loss(s, t, labels, **kw).total
    ref = distillm("js_distance", s, t, labels, 0.9)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(ours, s), _grad(ref, s), rtol=1e-9, atol=1e-12)
    old = kd_loss(s, t, labels, **(kw | {"teacher_weight": 0.9})).total  # the former β = 0.9
    assert abs(float(old - ref)) > 1e-3 * float(ref)


def test_distillm_minillm_torchtune_ce_mix_is_one_minus_kd_ratio(batch):
    """DistiLLM finetune.py L337, MiniLLM finetune.py L272, torchtune's KD recipe L663–665:
    ``(1 − kd_ratio)·CE + kd_ratio·D`` with no τ: our ce_weight = 1 − kd_ratio, and at τ = 1 the τ²
    factor is 1, so the totals differ only by kd_ratio·H(p) for their CE-form forward KL."""
    s, t, labels = batch
    kd_ratio = 0.7
    logq = torch.log_softmax(s, -1)
    ce = _masked_mean(-logq.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1), labels)
    theirs = (1 - kd_ratio) * ce + kd_ratio * distillm("forward_kl", s, t, labels)
    ours = kd_loss(s, t, labels, divergence="fkl", ce_weight=1 - kd_ratio).total
    torch.testing.assert_close(ours + kd_ratio * _teacher_entropy(t, labels), theirs,
                               rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- MiniLLM


def minillm_kd_baseline(s, t, labels):
    """microsoft/LMOps ``minillm/finetune.py`` ``get_distil_loss`` L157–176 (commit 4f2a9de):
    −Σ p log q over unmasked tokens / their count (CE form of the forward KL, no τ)."""
    return _masked_mean(-_xlogy_sum(_softmax(t), _softmax(s)), labels)


def minillm_reg_loss(s, t, labels):
    """``minillm/minillm/losses.py`` ``_reg_loss`` L98–108 with ``utils.py`` ``get_x_entropy``
    L50–63 and ``get_entropy`` L15–28: x-entropy(q, p) − H(q) = KL(q‖p), token mean."""
    p, q = _softmax(t), _softmax(s)
    return _masked_mean(-_xlogy_sum(q, p) + _xlogy_sum(q, q), labels)


def test_minillm_kd_baseline_is_ce_form_and_its_token_regulariser_is_our_rkl(batch):
    s, t, labels = batch
    fkl = _ours("fkl", s, t, labels)
    base = minillm_kd_baseline(s, t, labels)
    torch.testing.assert_close(fkl + _teacher_entropy(t, labels), base, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(fkl, s), _grad(base, s), rtol=1e-9, atol=1e-12)
    rkl = _ours("rkl", s, t, labels)
    torch.testing.assert_close(rkl, minillm_reg_loss(s, t, labels), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- torchtune


def torchtune_forward_kl(s, t, labels):
    """pytorch/torchtune ``torchtune/modules/loss/kd_losses.py`` ``ForwardKLLoss`` L47–59 (commit
    bd2a0fc7): −Σ p log q (CE form, after DistiLLM), Σ over unmasked tokens / their count."""
    return _masked_mean(-_xlogy_sum(_softmax(t), _softmax(s)), labels)


def torchtune_reverse_kl(s, t, labels):
    """``ReverseKLLoss`` L98–114: Σ q (log p − log q), negated; token mean."""
    p, q = _softmax(t), _softmax(s)
    return _masked_mean(_xlogy_sum(q, q) - _xlogy_sum(q, p), labels)


def test_torchtune_forward_kl_is_ce_form_and_reverse_kl_is_ours(batch):
    s, t, labels = batch
    fkl = _ours("fkl", s, t, labels)
    tt = torchtune_forward_kl(s, t, labels)
    torch.testing.assert_close(fkl + _teacher_entropy(t, labels), tt, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(fkl, s), _grad(tt, s), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(_ours("rkl", s, t, labels), torchtune_reverse_kl(s, t, labels),
                               rtol=1e-10, atol=1e-12)
