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
    sampler = PlanSampler(plan, dataset_ids=ids, seed=0)   # ids in dataset order
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collate)
    for epoch in range(plan.num_epochs):
        sampler.set_epoch(epoch)
        tau = sampler.temperature                # the plan's τ for this epoch
        for batch in loader:
            ...

The loop of :mod:`spectrumkd.train.loop` uses the same :func:`epoch_order`, so the order of
examples is the same in both. This module does not collate or load data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from spectrumkd import SpectrumKDError

__all__ = ["PlanSampler", "check_epoch", "epoch_order", "plan_index"]


def check_epoch(plan, epoch: int, *, hint: str = "") -> None:
    """Raise unless ``epoch`` (0-based, as ``set_epoch`` takes it) is one of the plan's; ``hint``
    ends the message."""
    if not 0 <= epoch < plan.num_epochs:
        raise SpectrumKDError(
            f"set_epoch({epoch}): the plan has {plan.num_epochs} epochs (0..{plan.num_epochs - 1}){hint}"
        )


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
    plan, epoch: int, index: dict, *, seed: int = 0, shuffle: bool = True
) -> list[int]:
    """Dataset indices of 1-based plan ``epoch``, shuffled by a generator seeded with ``seed + epoch``.

    >>> from spectrumkd.curriculum import EpochPlan, Plan
    >>> plan = Plan(3, {}, {"early": [], "continuous": [0, 1, 2], "late": [], "excluded": []},
    ...             [EpochPlan(1, 0, [2, 0, 1], 1.0, 3.0)])
    >>> epoch_order(plan, 1, {0: 0, 1: 1, 2: 2}, shuffle=False)
    [2, 0, 1]
    >>> sorted(epoch_order(plan, 1, {0: 0, 1: 1, 2: 2}, seed=7))
    [0, 1, 2]
    """
    ids = plan.epoch(epoch).ids
    indices = [index[i] for i in ids]
    if not shuffle:
        return indices
    g = torch.Generator()
    g.manual_seed(int(seed) + int(epoch))
    perm = torch.randperm(len(indices), generator=g).tolist()
    return [indices[p] for p in perm]


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
        order = epoch_order(self.plan, self.epoch + 1, self.index, seed=self.seed, shuffle=self.shuffle)
        total = self._total()
        if total > len(order):
            order = order + (order * (total // len(order) + 1))[: total - len(order)]
        order = order[:total]
        return iter(order[self.rank : total : self.num_replicas])
