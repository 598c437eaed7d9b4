"""The training loop on tiny random models: learning, invariants, resume, grouped batches, cache, LoRA,
bad input."""

from __future__ import annotations

import pytest
import torch

from conftest import STUDENT, TEACHER, full_plan, make_cfg, spectrum_plan
from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import EpochPlan, Plan
from spectrumkd.data import Collator
from spectrumkd.models import load_model
from spectrumkd.train.loop import train
from spectrumkd.train.teacher_cache import write_teacher_cache


def run(cfg, examples, tokenizer, plan=None, *, teacher=True, **kw):
    student = kw.pop("student", None) or load_model(STUDENT)
    t = load_model(TEACHER) if teacher is True else teacher
    result = train(cfg, student=student, tokenizer=tokenizer, examples=examples,
                   plan=plan or full_plan(examples), teacher=t, **kw)
    return result, student, t


def epoch_means(result, steps_per_epoch):
    return [sum(result.losses[i:i + steps_per_epoch]) / steps_per_epoch
            for i in range(0, len(result.losses), steps_per_epoch)]


@pytest.mark.parametrize("divergence", ["fkl", "rkl", "jsd", "tvd", "skl", "srkl"])
def test_each_divergence_lowers_the_training_loss(examples, tokenizer, divergence):
    cfg = make_cfg(loss={"mode": "kd", "divergence": divergence})
    result, _, _ = run(cfg, examples[:8], tokenizer)
    means = epoch_means(result, 2)
    assert len(means) == 3 and means[-1] < means[0]


def test_gkd_lowers_the_loss_and_mixes_student_samples(examples, tokenizer):
    # lr 3e-3 (make_cfg's): at 1e-2 the losses rise after the first steps, whatever the batch order
    cfg = make_cfg(loss={"mode": "gkd", "gkd_max_new_tokens": 8})
    seen = []
    result, _, _ = run(cfg, examples[:8], tokenizer, on_step=seen.append)
    assert cfg.loss.divergence == "jsd" and cfg.loss.ce_weight == 0.0
    assert {row["on_policy"] for row in seen} == {True, False}  # λ = 0.5 over 6 steps
    assert result.losses[-1] < result.losses[0]


def test_gkd_ce_weight_applies_to_dataset_responses_only(examples, tokenizer):
    cfg = make_cfg(loss={"mode": "gkd", "divergence": "rkl", "ce_weight": 0.3, "gkd_max_new_tokens": 8})
    seen = []
    run(cfg, examples[:8], tokenizer, on_step=seen.append)
    on = [r for r in seen if r["on_policy"]]
    off = [r for r in seen if not r["on_policy"]]
    assert on and off
    for r in on:  # on a student sample, the divergence alone
        assert r["loss"] == pytest.approx(r["kd"], rel=1e-5) and r["ce"] > 0
    for r in off:  # on the dataset's responses, 0.3·CE + 0.7·D
        assert r["loss"] == pytest.approx(0.3 * r["ce"] + 0.7 * r["kd"], rel=1e-5)


def test_sft_lowers_ce_without_a_teacher(examples, tokenizer):
    cfg = make_cfg(loss={"mode": "sft"})
    result, _, _ = run(cfg, examples[:8], tokenizer, teacher=None)
    assert result.losses[-1] < result.losses[0]


def test_student_changes_and_teacher_does_not(examples, tokenizer):
    student, teacher = load_model(STUDENT), load_model(TEACHER)
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    run(make_cfg(), examples[:8], tokenizer, student=student, teacher=teacher)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t0.items())
    changed = [k for k, v in s0.items() if not torch.equal(v, student.state_dict()[k])]
    assert len(changed) == len(s0)


def test_per_epoch_subsets_equal_the_plan(examples, tokenizer):
    plan = spectrum_plan(examples)
    result, _, _ = run(make_cfg(curriculum={"kind": "spectrumkd", "epochs": 4}), examples,
                       tokenizer, plan)
    assert [sorted(result.epoch_ids[e.epoch]) for e in plan.epochs] == [sorted(e.ids) for e in plan.epochs]
    assert len({tuple(e.ids) for e in plan.epochs}) > 1  # the window really moved


def test_batch4_acc1_equals_batch1_acc4(examples, tokenizer):
    a, sa, _ = run(make_cfg(optim={"batch_size": 4, "grad_accumulation": 1}), examples[:8], tokenizer)
    b, sb, _ = run(make_cfg(optim={"batch_size": 1, "grad_accumulation": 4}), examples[:8], tokenizer)
    assert a.losses == pytest.approx(b.losses, rel=1e-4)
    for (name, pa), pb in zip(sa.named_parameters(), sb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


def test_resume_after_ctrl_c_equals_uninterrupted(examples, tokenizer, tmp_path):
    cfg = make_cfg(optim={"schedule": "cosine", "warmup_steps": 1})
    full, _, _ = run(cfg, examples[:12], tokenizer, run_dir=tmp_path / "a")

    def interrupt(row):
        if row["step"] == 4:  # mid-epoch 2 (3 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, examples[:12], tokenizer, run_dir=tmp_path / "b", on_step=interrupt)
    assert (tmp_path / "b" / "checkpoints" / "last" / "state.pt").is_file()
    resumed, _, _ = run(cfg, examples[:12], tokenizer, run_dir=tmp_path / "b", resume=True)
    assert resumed.losses == pytest.approx(full.losses[4:], rel=1e-5)
    steps = [line for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert len(steps) >= 9


def test_grouped_batches_resume_mid_epoch_on_the_same_ids_and_losses(examples, tokenizer, tmp_path):
    cfg = make_cfg(optim={"group_by_length": True}, curriculum={"kind": "spectrumkd", "epochs": 4})
    plan = spectrum_plan(examples)  # subsets of 10 sliding over 4 epochs: 3 steps of 4 per epoch
    full, _, _ = run(cfg, examples, tokenizer, plan, run_dir=tmp_path / "a")

    def interrupt(row):
        if row["step"] == 5:  # mid-epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, examples, tokenizer, plan, run_dir=tmp_path / "b", on_step=interrupt)
    resumed, _, _ = run(cfg, examples, tokenizer, plan, run_dir=tmp_path / "b", resume=True)
    assert resumed.losses == pytest.approx(full.losses[5:], rel=1e-5)
    assert {e: full.epoch_ids[e] for e in (2, 3, 4)} == resumed.epoch_ids
    assert [sorted(full.epoch_ids[e.epoch]) for e in plan.epochs] == [sorted(e.ids) for e in plan.epochs]


def test_a_grouped_epoch_has_the_loss_of_the_same_examples_in_random_order(examples, tokenizer):
    """With the optimizer off (lr 1e-30 moves no weight by more than 1e-29), the token-weighted
    loss of an epoch does not depend on how its examples are batched: the global token count
    normalises each step whatever its padding."""
    teacher = load_model(TEACHER)
    rows: dict = {True: [], False: []}
    results, padded = {}, {}
    for grouped in (True, False):
        cfg = make_cfg(optim={"group_by_length": grouped, "lr": 1e-30, "grad_clip": None},
                       curriculum={"epochs": 1})  # fmt: skip
        student = load_model(STUDENT)
        before = {k: v.clone() for k, v in student.state_dict().items()}
        results[grouped], _, _ = run(cfg, examples, tokenizer, full_plan(examples, 1), student=student,
                                     teacher=teacher, on_step=rows[grouped].append)
        for k, v in before.items():  # AdamW's steps are ~lr: only exact zeros (the pad row) move
            torch.testing.assert_close(student.state_dict()[k], v, rtol=0, atol=1e-25, msg=k)
        order = [int(i[2:]) for i in results[grouped].epoch_ids[1]]
        padded[grouped] = sum(4 * max(len(examples[i].input_ids) for i in order[a : a + 4])
                              for a in range(0, 16, 4))  # fmt: skip
    assert sorted(results[True].epoch_ids[1]) == sorted(results[False].epoch_ids[1])
    assert padded[True] < padded[False]  # the grouping did regroup

    def weighted(rs, key):
        return sum(r[key] * r["tokens"] for r in rs) / sum(r["tokens"] for r in rs)

    for key in ("loss", "ce", "kd"):
        assert weighted(rows[True], key) == pytest.approx(weighted(rows[False], key), rel=1e-5)
    assert [r["loss"] for r in rows[True]] != pytest.approx([r["loss"] for r in rows[False]], rel=1e-3)


def test_cached_teacher_equals_online_teacher_when_k_is_vocab(examples, tokenizer, tmp_path):
    teacher = load_model(TEACHER)
    cache = write_teacher_cache(tmp_path / "cache", teacher, examples[:8], Collator(tokenizer.pad_token_id),
                                vocab_size=len(tokenizer), k=len(tokenizer), dtype="float32")
    cfg = make_cfg(loss={"divergence": "rkl"}, curriculum={"epochs": 2})
    online, s_online, _ = run(cfg, examples[:8], tokenizer, full_plan(examples[:8], 2), teacher=teacher)
    cached, s_cached, _ = run(cfg, examples[:8], tokenizer, full_plan(examples[:8], 2), teacher=None,
                              teacher_cache=cache)
    assert cached.losses == pytest.approx(online.losses, rel=1e-4)
    for pa, pb in zip(s_online.parameters(), s_cached.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-5)


def test_lora_trains_only_adapter_weights(examples, tokenizer):
    from spectrumkd.train.config import LoraConfig
    from spectrumkd.train.lora import apply_lora

    student = apply_lora(load_model(STUDENT), LoraConfig(enabled=True, r=4, alpha=8))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    run(make_cfg(lora={"enabled": True, "r": 4, "alpha": 8}, curriculum={"epochs": 1}),
        examples[:8], tokenizer, full_plan(examples[:8], 1), student=student)
    changed = {k for k, v in before.items() if not torch.equal(v, student.state_dict()[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)


def test_plan_ids_not_in_the_dataset_are_named(examples, tokenizer):
    plan = Plan(2, {}, {"early": [], "continuous": [examples[0].id, "ghost-7"], "late": [], "excluded": []},
                [EpochPlan(1, 0, [examples[0].id, "ghost-7"], 1.0, 1.0)])
    with pytest.raises(SpectrumKDError, match="ghost-7"):
        run(make_cfg(curriculum={"epochs": 1}), examples, tokenizer, plan)


def test_out_of_memory_suggests_chunked_loss_smaller_batch_and_cache(examples, tokenizer):
    student = load_model(STUDENT)

    def oom(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    student.register_forward_pre_hook(oom, with_kwargs=True)
    with pytest.raises(SpectrumKDError) as err:
        run(make_cfg(curriculum={"epochs": 1}), examples[:4], tokenizer, full_plan(examples[:4], 1),
            student=student)
    msg = str(err.value)
    assert "loss.chunk_size" in msg and "batch" in msg and "teacher_cache" in msg


def test_kd_without_teacher_is_an_error(examples, tokenizer):
    with pytest.raises(SpectrumKDError, match="teacher"):
        run(make_cfg(), examples[:4], tokenizer, teacher=None)
