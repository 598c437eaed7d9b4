"""PlanSampler: the module docstring's example runs; shards are disjoint and follow the plan;
length-grouped epochs are exact (shards, persistent workers, a fresh sampler) and less padded."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator
from spectrumkd.train.sampler import (
    MEGABATCH_BATCHES,
    PlanSampler,
    epoch_order,
    group_by_length,
    plan_index,
)


def test_documented_example_runs(examples, tokenizer):
    ids = [ex.id for ex in examples]
    scores = [float(len(ex.input_ids)) for ex in examples]
    dataset, collate = examples, Collator(tokenizer.pad_token_id)
    # --- the example of spectrumkd.train.sampler ---
    plan = make_plan("spectrumkd", ids, scores, epochs=4, warmup=1)
    sampler = PlanSampler(plan, dataset_ids=ids, seed=0,
                          lengths=[len(ex.input_ids) for ex in dataset], batch_size=8)
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


def _padding_share(order, lengths, batch):
    """Real tokens / padded tokens when ``order`` is cut into batches of ``batch``."""
    batches = [order[a : a + batch] for a in range(0, len(order), batch)]
    return sum(lengths[i] for i in order) / sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_group_by_length_permutes_sorts_megabatches_and_keeps_batch_boundaries():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 256, (203,), generator=g).tolist()
    order = torch.randperm(203, generator=g).tolist()
    got = group_by_length(order, lengths, batch_size=8, generator=torch.Generator().manual_seed(1))
    assert sorted(got) == sorted(order)
    batches = [got[a : a + 8] for a in range(0, 203, 8)]
    assert len(batches[-1]) == 203 % 8  # the short batch stays last
    assert all(lengths[b[0]] == max(lengths[i] for i in b) for b in batches)
    assert lengths[got[0]] == max(lengths)  # the longest batch first: out of memory at step 1
    megabatches = [sorted(order[a : a + 8 * MEGABATCH_BATCHES]) for a in range(0, 203, 64)]
    assert all(any(set(b) <= set(m) for m in megabatches) for b in batches)
    assert _padding_share(got, lengths, 8) > _padding_share(order, lengths, 8) + 0.2
    assert got != group_by_length(order, lengths, batch_size=8, generator=torch.Generator().manual_seed(2))
    # end points: one batch → sorted longest first; equal lengths → the order, batches shuffled
    assert group_by_length([0, 1, 2], [1, 3, 2], batch_size=5) == [1, 2, 0]
    assert group_by_length(list(range(8)), [7] * 8, batch_size=2) == list(range(8))


def test_grouped_epochs_are_exact_with_shards_and_persistent_workers(examples):
    """Two shards through DataLoaders with 2 persistent workers: together they yield each plan
    epoch's ids once, and each batch holds rows of similar length (one run of batch × shards)."""
    ids = [ex.id for ex in examples]
    lengths = [len(ex.input_ids) for ex in examples]
    plan = make_plan("spectrumkd", ids, [float(n) for n in lengths], epochs=4, warmup=1)
    samplers = [PlanSampler(plan, ids, seed=5, num_replicas=2, rank=r, lengths=lengths, batch_size=2)
                for r in range(2)]
    loaders = [DataLoader(examples, batch_size=2, sampler=s, collate_fn=lambda b: [ex.id for ex in b],
                          num_workers=2, persistent_workers=True) for s in samplers]  # fmt: skip
    for epoch in range(plan.num_epochs):
        for s in samplers:
            s.set_epoch(epoch)
        batches = [list(loader) for loader in loaders]
        got = sorted(i for shard in batches for b in shard for i in b)
        assert got == sorted(plan.epoch(epoch + 1).ids)  # subsets of 10: no padding of the shards
        order = epoch_order(plan, epoch + 1, plan_index(plan, ids), seed=5, lengths=lengths,
                            batch_size=4)  # fmt: skip
        runs = [order[a : a + 4] for a in range(0, len(order), 4)]
        assert [sorted(b0 + b1) for b0, b1 in zip(*batches)] == [sorted(ids[i] for i in r) for r in runs]


def test_grouped_order_is_a_function_of_seed_and_epoch(examples):
    """What a mid-epoch resume relies on: a fresh sampler gives the same grouped order."""
    ids = [ex.id for ex in examples]
    lengths = [len(ex.input_ids) for ex in examples]
    plan = make_plan("full", ids, list(range(len(ids))), epochs=3)
    a = PlanSampler(plan, ids, seed=1, lengths=lengths, batch_size=3)
    b = PlanSampler(plan, ids, seed=1, lengths=lengths, batch_size=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) == list(a)
    b.set_epoch(1)
    assert list(a) != list(b)
    plain = PlanSampler(plan, ids, seed=1)
    plain.set_epoch(2)
    assert sorted(a) == sorted(plain) and list(a) != list(plain)
