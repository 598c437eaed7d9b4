"""The curriculum in a real Hugging Face Trainer: the documented example runs and follows the plan."""

from __future__ import annotations

import pytest

from conftest import STUDENT, spectrum_plan
from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator
from spectrumkd.models import load_model
from spectrumkd.train.hf_callback import CurriculumCallback, CurriculumDataset


def test_documented_example_runs_with_a_real_trainer(examples, tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    plan = spectrum_plan(examples, epochs=4)
    ids = [ex.id for ex in examples]
    train_dataset = [{"input_ids": ex.input_ids, "labels": ex.labels, "id": ex.id} for ex in examples]
    seen: dict[int, list] = {}
    taus: list[float] = []
    pad = Collator(tokenizer.pad_token_id)

    def collate(rows):
        seen.setdefault(view.epoch + 1, []).extend(r["id"] for r in rows)
        return pad(rows)

    model = load_model(STUDENT).train()
    # --- the example of spectrumkd.train.hf_callback ---
    view = CurriculumDataset(train_dataset, plan, dataset_ids=ids)
    callback = CurriculumCallback(view, on_temperature=taus.append)
    args = TrainingArguments(str(tmp_path), num_train_epochs=plan.num_epochs, report_to="none",
                             per_device_train_batch_size=4, use_cpu=True, save_strategy="no",
                             disable_tqdm=True, logging_strategy="no", remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=view, data_collator=collate,
                      callbacks=[callback])
    trainer.train()
    # ---
    assert {e: sorted(v) for e, v in seen.items()} == {e.epoch: sorted(e.ids) for e in plan.epochs}
    assert taus == [e.temperature for e in plan.epochs]
    assert trainer.state.global_step == sum(-(-len(e.ids) // 4) for e in plan.epochs)


def test_plans_with_varying_subset_sizes_are_refused(examples):
    ids = [ex.id for ex in examples]
    plan = make_plan("babystep", ids, list(range(len(ids))), epochs=3, buckets=3)
    with pytest.raises(SpectrumKDError, match="PlanSampler"):
        CurriculumCallback(CurriculumDataset(examples, plan, ids))
