"""The plan as a torch ``Sampler``: each epoch yields the dataset indices of that epoch's subset.

For people with their own training loop (plug-and-play): build the plan with
:mod:`spectrumkd.curriculum`, wrap it in :class:`PlanSampler` and call ``set_epoch(epoch)`` at
the start of every epoch, exactly as with ``torch.utils.data.DistributedSampler`` (``epoch`` is
0-based there, so ``set_epoch(e)`` selects the plan's epoch ``e + 1``). Under
``torch.distributed`` each process gets a disjoint shard of the epoch's (shuffled) subset.

Example (runs in ``tests/train/test_sampler.py``)::

    from torch.utils.data import DataLoader
    from spectrumkd.curriculum import make_plan
    from spectrumkd.train.sampler import PlanSampler

    plan = make_plan("spectrumkd", ids, scores, epochs=4, warmup=1)
    sampler = PlanSampler(plan, dataset_ids=ids, seed=0,   # ids in dataset order
                          lengths=[len(ex.input_ids) for ex in dataset], batch_size=8)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collate)
    for epoch in range(plan.num_epochs):
        sampler.set_epoch(epoch)
        tau = sampler.temperature                # the plan's τ for this epoch
        for batch in loader:
            ...

Length grouping (``lengths=``, ``batch_size=``; ``spectrumkd distill``'s ``optim.group_by_length``):
padding a random batch of 8 Dolly rows to its longest row wastes ~40% of the compute.
:func:`group_by_length` cuts each epoch's shuffled order into megabatches of
:data:`MEGABATCH_BATCHES` batches, sorts each by length, and shuffles the order of the batches.
It only permutes the epoch's order, so every epoch still holds exactly the plan's ids, and the
order is a function of (seed, epoch, lengths): a resumed epoch finds it again. Batch boundaries
stay at multiples of the batch size (the one short batch, if any, stays last), so each process's
share of a batch holds rows of similar length too. Cf. Hugging Face's ``LengthGroupedSampler``
(no batch shuffle there) and TRL's ``padding_free``.

The loop of :mod:`spectrumkd.train.loop` uses the same :func:`epoch_order`, so the order of
examples is the same in both. This module does not collate or load data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from spectrumkd import SpectrumKDError

__all__ = ["MEGABATCH_BATCHES", "PlanSampler", "check_epoch", "epoch_order", "group_by_length",
           "plan_index"]

MEGABATCH_BATCHES = 8
"""Batches per megabatch of :func:`group_by_length`: 64 rows at batch 8 sort away most of the
padding (Dolly: 58% → ~90% real tokens) while the batches still mix the whole epoch."""


def check_epoch(plan, epoch: int, *, hint: str = "") -> None:
    """Raise unless ``epoch`` (0-based, as ``set_epoch`` takes it) is one of the plan's; ``hint``
    ends the message."""
    if not 0 <= epoch < plan.num_epochs:
        raise SpectrumKDError(
            f"set_epoch({epoch}): the plan has {plan.num_epochs} epochs (0..{plan.num_epochs - 1}){hint}"
        )


def require_plan(plan) -> None:
    """Refuse anything but a :class:`~spectrumkd.curriculum.Plan` with a one-line error (a plan
    read with ``json.load`` is a dict: ``Plan.from_dict`` validates it first)."""
    from spectrumkd.curriculum import Plan

    if not isinstance(plan, Plan):
        hint = "; build it with Plan.from_dict(...) or Plan.load(path)" if isinstance(plan, dict) else ""
        raise SpectrumKDError(f"expected a spectrumkd Plan, got {type(plan).__name__}{hint}")


def plan_index(plan, dataset_ids: Sequence) -> dict:
    """Map every id the plan uses to its position in ``dataset_ids``.

    Raises :class:`SpectrumKDError` naming the plan ids that the dataset does not hold (a plan
    made from another data file, or a different ``data.limit``).

    >>> from spectrumkd.curriculum import EpochPlan, Plan
    >>> plan = Plan(3, {}, {"early": [], "continuous": ["a", "b", "c"], "late": [], "excluded": []},
    ...             [EpochPlan(1, 0, ["c", "a"], 1.0, 2.0)])
    >>> plan_index(plan, ["a", "b", "c"])
    {'c': 2, 'a': 0}
    >>> plan_index(plan, ["a", "b"])
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: the plan uses 1 id(s) that are not in the dataset: ['c']
    """
    require_plan(plan)
    position = {i: n for n, i in enumerate(dataset_ids)}
    if len(position) != len(dataset_ids):
        raise SpectrumKDError("the dataset has repeated example ids")
    used: dict = {}
    missing: list = []
    for e in plan.epochs:
        for i in e.ids:
            if i in used:
                continue
            if i in position:
                used[i] = position[i]
            elif i not in missing:
                missing.append(i)
    if missing:
        raise SpectrumKDError(
            f"the plan uses {len(missing)} id(s) that are not in the dataset: {missing[:10]}"
            + (" ..." if len(missing) > 10 else "")
        )
    return used


def epoch_order(
    plan, epoch: int, index: dict, *, seed: int = 0, shuffle: bool = True,
    lengths: Sequence[int] | None = None, batch_size: int = 1,
) -> list[int]:
    """Dataset indices of 1-based plan ``epoch``, shuffled by a generator seeded with ``seed + epoch``.

    With ``lengths`` (token counts in dataset order), the order is then :func:`group_by_length`
    in batches of ``batch_size`` (the same generator shuffles the batches). ``shuffle=False``
    keeps the plan's order (and, grouped, the batches' order).

    >>> from spectrumkd.curriculum import EpochPlan, Plan
    >>> plan = Plan(3, {}, {"early": [], "continuous": [0, 1, 2], "late": [], "excluded": []},
    ...             [EpochPlan(1, 0, [2, 0, 1], 1.0, 3.0)])
    >>> epoch_order(plan, 1, {0: 0, 1: 1, 2: 2}, shuffle=False)
    [2, 0, 1]
    >>> sorted(epoch_order(plan, 1, {0: 0, 1: 1, 2: 2}, seed=7))
    [0, 1, 2]
    >>> epoch_order(plan, 1, {0: 0, 1: 1, 2: 2}, shuffle=False, lengths=[5, 9, 7], batch_size=1)
    [1, 2, 0]
    """
    ids = plan.epoch(epoch).ids
    indices = [index[i] for i in ids]
    g = None
    if shuffle:
        g = torch.Generator()
        g.manual_seed(int(seed) + int(epoch))
        perm = torch.randperm(len(indices), generator=g).tolist()
        indices = [indices[p] for p in perm]
    if lengths is not None:
        indices = group_by_length(indices, lengths, batch_size=batch_size, generator=g)
    return indices


def group_by_length(order: list[int], lengths: Sequence[int], *, batch_size: int,
                    generator: torch.Generator | None = None) -> list[int]:
    """``order`` regrouped so that each run of ``batch_size`` rows has rows of similar length.

    Cut ``order`` into megabatches of ``MEGABATCH_BATCHES × batch_size`` rows, sort each by
    ``lengths[row]`` (longest first, ties in order), cut into batches, shuffle the whole batches
    with ``generator`` (None: keep their order), then move the batch holding the longest row to
    the front, so that an out-of-memory error comes at the first step, not hours in. A short
    last batch (``len(order) % batch_size`` rows) stays last, so batch boundaries stay at
    multiples of ``batch_size``. Returns a permutation of ``order``. End points:
    ``batch_size ≥ len(order)`` → one batch, sorted longest first; all lengths equal → ``order``
    with its batches shuffled.

    >>> group_by_length([0, 1, 2, 3, 4], [3, 9, 1, 8, 2], batch_size=2)
    [1, 3, 0, 4, 2]
    """
    if batch_size < 1:
        raise SpectrumKDError(f"group_by_length: batch_size must be >= 1, got {batch_size}")
    mega = MEGABATCH_BATCHES * batch_size
    rows = [r for a in range(0, len(order), mega)
            for r in sorted(order[a : a + mega], key=lambda r: -lengths[r])]  # fmt: skip
    batches = [rows[a : a + batch_size] for a in range(0, len(rows), batch_size)]
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size and len(batches) > 1 else []
    if generator is not None and len(batches) > 1:
        batches = [batches[p] for p in torch.randperm(len(batches), generator=generator).tolist()]
    if batches:
        first = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
        batches[0], batches[first] = batches[first], batches[0]
    return [r for b in batches + short for r in b]


class PlanSampler(Sampler[int]):
    """Yield the dataset indices of the current plan epoch (see the module docstring).

    Args:
        plan: a :class:`spectrumkd.curriculum.Plan`.
        dataset_ids: the example ids in dataset order (index ``n`` holds ``dataset_ids[n]``).
        shuffle: shuffle each epoch's subset with a generator seeded by ``seed + epoch``.
        seed: the same on every process.
        num_replicas, rank: the process group; default from ``torch.distributed`` when it is
            initialised, else 1 and 0.
        drop_last: drop the tail that does not divide evenly across processes; otherwise the
            shards are padded by repeating the first indices (as ``DistributedSampler`` does).
        lengths: the examples' token counts in dataset order; given, each epoch's order is
            :func:`group_by_length` (unset: random batches).
        batch_size: the data loader's batch size per process (used only with ``lengths``):
            rows are grouped in runs of ``batch_size × num_replicas``, so that every process's
            batch holds rows of similar length.
    """

    def __init__(
        self,
        plan,
        dataset_ids: Sequence,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if not 0 <= rank < num_replicas:
            raise SpectrumKDError(f"rank {rank} is outside [0, {num_replicas})")
        self.plan = plan
        self.index = plan_index(plan, dataset_ids)
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        if lengths is not None and len(lengths) != len(dataset_ids):
            raise SpectrumKDError(f"lengths has {len(lengths)} entries for {len(dataset_ids)} dataset ids")
        self.lengths = lengths
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the plan's epoch ``epoch + 1`` (``epoch`` is 0-based, as for DistributedSampler)."""
        check_epoch(self.plan, epoch)
        self.epoch = epoch

    @property
    def temperature(self) -> float:
        """The plan's distillation temperature τ for the current epoch."""
        return self.plan.epoch(self.epoch + 1).temperature

    def _total(self) -> int:
        n = len(self.plan.epoch(self.epoch + 1).ids)
        if self.drop_last:
            return n - n % self.num_replicas
        return -(-n // self.num_replicas) * self.num_replicas

    def __len__(self) -> int:
        return self._total() // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.plan, self.epoch + 1, self.index, seed=self.seed, shuffle=self.shuffle,
                            lengths=self.lengths, batch_size=self.batch_size * self.num_replicas)
        total = self._total()
        if total > len(order):
            order = order + (order * (total // len(order) + 1))[: total - len(order)]
        order = order[:total]
        return iter(order[self.rank : total : self.num_replicas])
