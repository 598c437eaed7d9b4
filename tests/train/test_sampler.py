"""PlanSampler: the module docstring's example runs; shards are disjoint and follow the plan."""

from __future__ import annotations

from torch.utils.data import DataLoader

from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator
from spectrumkd.train.sampler import PlanSampler, epoch_order, plan_index


def test_documented_example_runs(examples, tokenizer):
    ids = [ex.id for ex in examples]
    scores = [float(len(ex.input_ids)) for ex in examples]
    dataset, collate = examples, Collator(tokenizer.pad_token_id)
    # --- the example of spectrumkd.train.sampler ---
    plan = make_plan("spectrumkd", ids, scores, epochs=4, warmup=1)
    sampler = PlanSampler(plan, dataset_ids=ids, seed=0)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collate)
    seen = []
    for epoch in range(plan.num_epochs):
        sampler.set_epoch(epoch)
        tau = sampler.temperature
        for batch in loader:
            assert batch["input_ids"].shape[0] <= 8
        seen.append((sorted(ids[i] for i in sampler), tau))
    # ---
    assert seen == [(sorted(e.ids), e.temperature) for e in plan.epochs]


def test_distributed_shards_are_disjoint_and_cover_the_epoch(examples):
    ids = [ex.id for ex in examples]
    plan = make_plan("full", ids, list(range(len(ids))), epochs=2)
    shards = [PlanSampler(plan, ids, seed=3, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    got = [list(s) for s in shards]
    assert len({len(g) for g in got}) == 1
    flat = [i for g in got for i in g]
    assert set(flat) == set(range(len(ids)))
    assert len(flat) == 18  # 16 padded to a multiple of 3
    order = epoch_order(plan, 2, plan_index(plan, ids), seed=3)
    assert got[0] == (order + order)[0:18:3]
