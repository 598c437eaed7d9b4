"""The pieces of spectrumkd.train.hf_callback: sampler, id resolution, the ``id`` column.

The end-to-end runs of every trainer are in ``test_hf_trainers.py``.
"""

from __future__ import annotations

import pytest

from conftest import STUDENT, spectrum_plan
from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator
from spectrumkd.models import load_model
from spectrumkd.train.hf_callback import CurriculumSampler, _resolve_ids, curriculum_trainer


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Trainers set accelerate's process-wide state; leave none behind for the next test."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_sampler_yields_each_epochs_rows_once_and_refuses_a_foreign_epoch(examples):
    plan = spectrum_plan(examples, epochs=4)
    ids = [ex.id for ex in examples]
    sampler = CurriculumSampler(plan, ids, seed=3)
    for e in plan.epochs:
        sampler.set_epoch(e.epoch - 1)
        rows = list(sampler)
        assert sorted(ids[r] for r in rows) == sorted(e.ids)
        assert len(sampler) == len(rows) == sampler.yielded
        assert sampler.temperature == e.temperature
    sampler.pin(1)
    with pytest.raises(SpectrumKDError, match="global step and plan say epoch 1"):
        sampler.set_epoch(2)
    with pytest.raises(SpectrumKDError, match="the plan has 4 epochs"):
        sampler.set_epoch(4)


def test_generation_batches_repeat_like_trls_repeat_sampler(examples):
    plan = spectrum_plan(examples, epochs=3)  # subsets of 10
    ids = [ex.id for ex in examples]
    sampler = CurriculumSampler(plan, ids, seed=0, generation_batch=4, repeat=2)
    rows = list(sampler)
    assert len(rows) == len(sampler) == 16  # 2 whole batches of 4, each twice; 2 rows dropped
    assert rows[:4] == rows[4:8] and rows[8:12] == rows[12:16]
    trl = pytest.importorskip("trl", reason="TRL is not installed")
    from trl.trainer.utils import RepeatSampler

    ref = list(RepeatSampler(list(range(10)), mini_repeat_count=1, batch_size=4, repeat_count=2,
                             shuffle=False))
    plain = CurriculumSampler(plan, ids, shuffle=False, generation_batch=4, repeat=2)
    order = [plan.epoch(1).ids.index(ids[r]) for r in plain]
    assert order == ref, trl.__version__


def test_ids_come_from_the_id_column_or_must_match_the_rows(examples):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"id": ex.id, "input_ids": ex.input_ids} for ex in examples])
    assert _resolve_ids(ds, None) == [ex.id for ex in examples]
    assert _resolve_ids([{"id": 7}, {"id": 9}], None) == [7, 9]
    with pytest.raises(SpectrumKDError, match="no `id` column"):
        _resolve_ids(ds.remove_columns("id"), None)
    with pytest.raises(SpectrumKDError, match="did the trainer drop rows"):
        _resolve_ids(ds, [ex.id for ex in examples][:-1])
    with pytest.raises(SpectrumKDError, match="disagrees"):
        _resolve_ids(ds, [ex.id for ex in reversed(examples)])


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_the_id_column_reaches_a_collator_only_without_remove_unused_columns(
    remove_unused_columns, examples, tokenizer, tmp_path
):
    """The Trainer strips ``id`` by default; the curriculum does not need it, a collator might."""
    datasets = pytest.importorskip("datasets")
    from transformers import Trainer, TrainingArguments

    plan = spectrum_plan(examples, epochs=3)
    rows = [{"id": ex.id, "input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
    pad = Collator(tokenizer.pad_token_id)
    keys: set = set()
    seen: list = []

    def collate(batch):
        keys.update(*(r.keys() for r in batch))
        seen.extend(r["id"] for r in batch if "id" in r)
        return pad(batch)

    args = TrainingArguments(str(tmp_path), num_train_epochs=3, per_device_train_batch_size=5,
                             use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                             logging_strategy="no", remove_unused_columns=remove_unused_columns)
    trainer = curriculum_trainer(Trainer, plan, model=load_model(STUDENT).train(), args=args,
                                 train_dataset=datasets.Dataset.from_list(rows),
                                 data_collator=collate)
    trainer.train()
    assert ("id" in keys) is (not remove_unused_columns)
    if not remove_unused_columns:
        assert sorted(seen) == sorted(i for e in plan.epochs for i in e.ids)
    assert [h.examples for h in trainer.curriculum.history] == plan.subset_sizes()
