"""Real ``transformers.Trainer`` and TRL trainers with the curriculum: exact ids and τ per epoch.

Each run counts the example ids of every batch where the trainer really consumes it (inside
``compute_loss``; for ``DistillationTrainer``, where the prompts of a generation batch become the
batch that ``compute_loss`` trains on) and attributes it to the plan epoch
``global_step // steps_per_epoch``, computed here from the batch size and accumulation, not from the
callback. Runs use 2 persistent data-loader workers and gradient accumulation 2; the resume test
stops in the middle of epoch 2 and resumes from the checkpoint in a fresh trainer.
"""

from __future__ import annotations

import collections
import importlib
import math
import warnings

import pytest

from conftest import STUDENT, TEACHER, spectrum_plan
from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator
from spectrumkd.models import load_model
from spectrumkd.train.hf_callback import curriculum_trainer

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from spectrumkd.train.trl_adapters import distillation_trainer_class, gkd_trainer_class  # noqa: E402

KINDS = ["trainer", "sft", "gkd", "distillation"]
# subsets of 8: batch 3 gives a short last batch and a short last accumulation window;
# DistillationTrainer needs whole generation batches (batch × accumulation divides the subset)
BATCH = {"trainer": 3, "sft": 3, "gkd": 3, "distillation": 2}
ACCUM = 2


def _trl(kind: str):
    """The TRL trainer and config classes for ``kind``, or skip with the reason."""
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install trl)")
    if kind == "sft":
        return trl.SFTTrainer, trl.SFTConfig
    if kind == "gkd":
        cls = gkd_trainer_class()
        if cls is None:
            pytest.skip(f"TRL {trl.__version__} has no GKD trainer")
        package = importlib.import_module(cls.__module__.rsplit(".", 1)[0])  # trl.experimental.gkd
        return cls, getattr(package, "GKDConfig", None) or trl.GKDConfig
    cls = distillation_trainer_class()
    if cls is None:
        pytest.skip(f"TRL {trl.__version__} has no DistillationTrainer")
    return cls, trl.DistillationConfig


def _recording(base: type, kind: str, spe: int, log: list):
    """``base`` subclassed to log (plan epoch 1-based, example key, τ the loss used) per example."""

    def epoch_now(self) -> int:
        return self.state.global_step // spe + 1

    if kind == "distillation":

        class Rec(base):
            def _generate_and_score_completions(self, inputs):
                for row in inputs:
                    log.append((epoch_now(self), "row", row["prompt"]))
                return super()._generate_and_score_completions(inputs)

            def _compute_loss(self, *args, **kwargs):
                log.append((epoch_now(self), "tau", self.temperature))
                return super()._compute_loss(*args, **kwargs)

        return Rec

    class Rec(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            inputs.pop("id", None)
            for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
                log.append((epoch_now(self), "row", tuple(i for i, m in zip(ids, mask) if m)))
            if kind != "gkd":
                log.append((epoch_now(self), "tau", self.curriculum.temperature))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def generalized_jsd_loss(self, *args, **kwargs):  # GKD only: the τ TRL's loss receives
            log.append((epoch_now(self), "tau", kwargs["temperature"]))
            return super().generalized_jsd_loss(*args, **kwargs)

    return Rec


def _dataset(kind: str, examples):
    if kind == "sft":
        rows = [{"id": ex.id, "prompt": ex.prompt, "completion": ex.response} for ex in examples]
    elif kind == "distillation":
        rows = [{"id": ex.id, "prompt": ex.prompt} for ex in examples]
    else:
        rows = [{"id": ex.id, "input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
    return datasets.Dataset.from_list(rows)


def _build(kind, plan, examples, tokenizer, out_dir, log, **extra_args):
    """A curriculum trainer of ``kind``; returns (trainer, key → id)."""
    batch = BATCH[kind]
    spe = steps_per_epoch(plan, kind)
    common = dict(
        output_dir=str(out_dir), num_train_epochs=plan.num_epochs, per_device_train_batch_size=batch,
        gradient_accumulation_steps=ACCUM, dataloader_num_workers=2,
        dataloader_persistent_workers=True, use_cpu=True, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_strategy="no", learning_rate=1e-3, seed=0,
        bf16=False,  # TRL's configs default to bf16: slow on CPU, and it would leak into later tests
    )  # fmt: skip
    common.update(extra_args)
    dataset = _dataset(kind, examples)
    student = load_model(STUDENT).train()
    tok = tokenizer
    if kind == "trainer":
        cls, kwargs = transformers.Trainer, {}
        args = transformers.TrainingArguments(**common)
        kwargs = dict(data_collator=Collator(tok.pad_token_id))
    else:
        cls, config = _trl(kind)
        if kind == "sft":
            args = config(**common, max_length=128)
            kwargs = dict(processing_class=tok)
        elif kind == "gkd":
            args = config(**common, lmbda=0.0, beta=0.5, max_new_tokens=4,
                          dataset_kwargs={"skip_prepare_dataset": True})
            kwargs = dict(teacher_model=load_model(TEACHER), processing_class=tok,
                          data_collator=Collator(tok.pad_token_id))
        else:
            tok = _left_padded(tokenizer)  # DistillationTrainer pads prompts on the left
            args = config(**common, max_completion_length=3, beta=0.5)
            kwargs = dict(teacher_model=load_model(TEACHER), processing_class=tok)
    rec = _recording(cls, kind, spe, log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = curriculum_trainer(rec, plan, model=student, args=args, train_dataset=dataset,
                                     **kwargs)
    if kind == "distillation":
        key_to_id = {ex.prompt: ex.id for ex in examples}
    else:
        prepared = trainer.train_dataset
        key_to_id = {tuple(r["input_ids"]): r["id"] for r in prepared}
        assert len(key_to_id) == len(examples), "examples must be distinguishable by their tokens"
    return trainer, key_to_id, spe


def _left_padded(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    return tok


def _per_epoch(log, key_to_id):
    ids: dict[int, list] = collections.defaultdict(list)
    taus: dict[int, set] = collections.defaultdict(set)
    for epoch, what, value in log:
        if what == "row":
            ids[epoch].append(key_to_id[value])
        else:
            taus[epoch].add(round(value, 9))
    return ids, taus


def _expected(plan):
    return ({e.epoch: sorted(e.ids) for e in plan.epochs},
            {e.epoch: {round(e.temperature, 9)} for e in plan.epochs})


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Trainers set accelerate's process-wide state; leave none behind for the next test."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def plan(examples):
    ids = [ex.id for ex in examples]
    scores = [float(len(ex.input_ids)) + 0.01 * i for i, ex in enumerate(examples)]
    # 16 examples, subsets of 8 sliding over 4 epochs, τ 1 → 2
    return make_plan("spectrumkd", ids, scores, epochs=4, warmup=0, lambda_a=0.25, lambda_b=0.25)


@pytest.mark.parametrize("kind", KINDS)
def test_each_epoch_trains_on_exactly_the_plans_ids_at_its_tau(kind, plan, examples, tokenizer,
                                                               tmp_path):
    log: list = []
    trainer, key_to_id, spe = _build(kind, plan, examples, tokenizer, tmp_path, log)
    trainer.train()
    ids, taus = _per_epoch(log, key_to_id)
    want_ids, want_taus = _expected(plan)
    assert {e: sorted(v) for e, v in ids.items()} == want_ids  # each id once per epoch, no other
    assert dict(taus) == want_taus
    assert trainer.state.global_step == spe * plan.num_epochs
    history = trainer.curriculum.history
    assert [(h.epoch, h.temperature, h.examples, h.steps) for h in history] == [
        (e.epoch, e.temperature, len(e.ids), spe) for e in plan.epochs
    ]
    if kind in ("gkd", "distillation"):
        assert [h.loss_temperatures for h in history] == [(e.temperature,) for e in plan.epochs]


@pytest.mark.parametrize("kind", KINDS)
def test_mid_epoch_resume_continues_the_same_subset_at_the_same_tau(kind, plan, examples,
                                                                    tokenizer, tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                control.should_training_stop = True

    log: list = []
    spe = steps_per_epoch(plan, kind)
    stop = spe + 1  # one optimizer step into plan epoch 2
    first, key_to_id, _ = _build(kind, plan, examples, tokenizer, tmp_path, log,
                                 save_strategy="steps", save_steps=stop)
    first.add_callback(StopAt(stop))
    first.train()
    assert first.state.global_step == stop
    second, _, _ = _build(kind, plan, examples, tokenizer, tmp_path, log,
                          save_strategy="steps", save_steps=stop)
    second.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{stop}"))
    ids, taus = _per_epoch(log, key_to_id)
    want_ids, want_taus = _expected(plan)
    assert {e: sorted(v) for e, v in ids.items()} == want_ids
    assert dict(taus) == want_taus
    resumed = second.curriculum.history[0]
    assert (resumed.epoch, resumed.first_step, resumed.steps) == (2, stop, spe - 1)
    assert resumed.temperature == plan.epoch(2).temperature
    assert resumed.examples == len(plan.epoch(2).ids) - ACCUM * BATCH[kind]


def steps_per_epoch(plan, kind) -> int:
    """ceil(ceil(subset / batch) / accumulation), as the Trainer counts optimizer steps."""
    return math.ceil(math.ceil(len(plan.epochs[0].ids) / BATCH[kind]) / ACCUM)


def test_tau_reaches_the_gkd_loss(plan, examples, tokenizer, tmp_path):
    """The adapted GKD loss differs at τ = 1 and τ = 2 and equals τ²·TRL(τ) = spectrumkd's jsd."""
    import torch

    from spectrumkd.losses import kd_loss

    log: list = []
    trainer, _, _ = _build("gkd", plan, examples, tokenizer, tmp_path, log)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 31, generator=g), torch.randn(2, 5, 31, generator=g)
    labels = torch.randint(0, 31, (2, 5), generator=g)
    labels[0, :2] = -100
    base = gkd_trainer_class()
    values = {}
    for tau in (1.0, 2.0):
        trainer.curriculum.temperature = tau
        got = trainer.generalized_jsd_loss(student_logits=s, teacher_logits=t, labels=labels,
                                           beta=0.5)
        trl_value = base.generalized_jsd_loss(s, t, labels=labels, beta=0.5, temperature=tau)
        ours = kd_loss(s, t, labels, divergence="jsd", teacher_weight=0.5, temperature=tau,
                       ce_weight=0.0)
        torch.testing.assert_close(got, tau**2 * trl_value)
        torch.testing.assert_close(got, ours.total, rtol=1e-5, atol=1e-7)
        values[tau] = float(got)
    assert abs(values[1.0] - values[2.0]) > 1e-3 * values[1.0]


def test_tau_reaches_the_distillation_loss(plan, examples, tokenizer, tmp_path):
    """DistillationTrainer's loss at the plan's τ = 2 is τ²·TRL's loss at temperature 2, ≠ τ = 1."""
    log: list = []
    trainer, _, _ = _build("distillation", plan, examples, tokenizer, tmp_path, log)
    inputs = trainer._generate_and_score_completions([{"prompt": ex.prompt} for ex in examples[:2]])
    base = distillation_trainer_class()
    values = {}
    for tau in (1.0, 2.0):
        trainer.curriculum.temperature = tau
        got = trainer.compute_loss(trainer.model, dict(inputs))
        trainer.temperature = tau
        trl_value = base.compute_loss(trainer, trainer.model, dict(inputs))
        assert float(got) == pytest.approx(tau**2 * float(trl_value), rel=1e-5)
        values[tau] = float(got)
    assert abs(values[1.0] - values[2.0]) > 1e-3 * abs(values[1.0])
    assert trainer.curriculum._loss_taus == {1.0, 2.0}


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_group_by_length_batches_similar_rows_and_keeps_each_epoch_exact(kind, plan, examples,
                                                                        tokenizer, tmp_path):
    """``train_sampling_strategy="group_by_length"`` through 2 persistent workers: each epoch's
    ids exactly once, and each batch of 3 sorted longest first (subsets of 8: one sorted
    megabatch, cut 3 + 3 + 2)."""
    log: list = []
    trainer, key_to_id, _ = _build(kind, plan, examples, tokenizer, tmp_path, log,
                                   train_sampling_strategy="group_by_length")
    trainer.train()
    ids, _ = _per_epoch(log, key_to_id)
    assert {e: sorted(v) for e, v in ids.items()} == _expected(plan)[0]
    rows = [value for _, what, value in log if what == "row"]
    for a in range(0, len(rows), 8):
        lengths = [len(r) for r in rows[a : a + 8]]
        batches = [lengths[0:3], lengths[3:6], lengths[6:8]]
        assert all(b == sorted(b, reverse=True) for b in batches), lengths
        assert min(batches[0] + batches[1]) >= max(batches[2])  # the shortest rows make the short batch
        assert max(lengths) in (batches[0][0], batches[1][0]) and batches[0][0] == max(lengths)


def test_refusals(examples, tokenizer, tmp_path):
    ids = [ex.id for ex in examples]
    babystep = make_plan("babystep", ids, list(range(len(ids))), epochs=3, buckets=3)
    with pytest.raises(SpectrumKDError, match="PlanSampler"):
        _build("trainer", babystep, examples, tokenizer, tmp_path, [])
    plan = spectrum_plan(examples, epochs=4)
    with pytest.raises(SpectrumKDError, match="num_train_epochs=4"):
        _build("trainer", plan, examples, tokenizer, tmp_path, [], num_train_epochs=3)
    with pytest.raises(SpectrumKDError, match="drop"):
        _build("trainer", plan, examples, tokenizer, tmp_path, [], dataloader_drop_last=True,
               per_device_train_batch_size=3)
    with pytest.raises(SpectrumKDError, match="train_sampling_strategy"):
        _build("trainer", plan, examples, tokenizer, tmp_path, [],
               train_sampling_strategy="batch_rebalance")
    with pytest.raises(SpectrumKDError, match="group_by_length"):
        _build("distillation", plan, examples, tokenizer, tmp_path, [],
               train_sampling_strategy="group_by_length")
    with pytest.raises(SpectrumKDError, match="generation batches|multiple"):
        _build("distillation", plan, examples, tokenizer, tmp_path, [],
               per_device_train_batch_size=3)
