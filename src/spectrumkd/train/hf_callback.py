"""The curriculum inside Hugging Face ``Trainer`` / TRL trainers: a dataset view and a callback.

``Trainer`` builds its dataloader once, so the subset cannot be swapped by replacing the sampler.
Instead the training dataset is a :class:`CurriculumDataset` — a view of your dataset that shows
only the current plan epoch's examples — and :class:`CurriculumCallback` moves the view to the
next plan epoch in ``on_epoch_begin`` (before the Trainer iterates that epoch's dataloader) and
publishes the epoch's τ. The Trainer's own random sampler still shuffles within the subset.

Example (runs in ``tests/train/test_hf_callback.py``)::

    from transformers import Trainer, TrainingArguments
    from spectrumkd.train.hf_callback import CurriculumCallback, CurriculumDataset

    view = CurriculumDataset(train_dataset, plan, dataset_ids=ids)   # ids in dataset order
    callback = CurriculumCallback(view, on_temperature=lambda tau: setattr(my_loss, "tau", tau))
    args = TrainingArguments("out", num_train_epochs=plan.num_epochs, report_to="none")
    trainer = Trainer(model=model, args=args, train_dataset=view, data_collator=collate,
                      callbacks=[callback])
    trainer.train()

Limits: ``Trainer`` fixes the number of steps per epoch from the first epoch, so the plan's
subsets must all have the same size (true of SpectrumKD's sliding window, ``full`` and ``static``;
not of TCL Baby Step / One-Pass — use :class:`spectrumkd.train.sampler.PlanSampler` in your own
loop, or ``spectrumkd distill``, for those). ``num_train_epochs`` must equal the plan's epochs.
τ reaches your loss only through ``on_temperature`` or ``callback.temperature``: the Trainer has
no temperature of its own (TRL's GKD trainer copies its ``temperature`` at construction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.utils.data import Dataset
from transformers import TrainerCallback

from spectrumkd import SpectrumKDError
from spectrumkd.train.sampler import plan_index

__all__ = ["CurriculumCallback", "CurriculumDataset"]


class CurriculumDataset(Dataset):
    """The examples of one plan epoch of ``dataset`` (any indexable dataset).

    ``set_epoch(e)`` (0-based, as ``Trainer``/accelerate call it) shows the plan's epoch ``e + 1``.
    """

    def __init__(self, dataset, plan, dataset_ids: Sequence) -> None:
        self.dataset = dataset
        self.plan = plan
        self.index = plan_index(plan, dataset_ids)
        self.epoch = 0
        self._rows = [self.index[i] for i in plan.epoch(1).ids]

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if not 0 <= epoch < self.plan.num_epochs:
            raise SpectrumKDError(f"set_epoch({epoch}): the plan has {self.plan.num_epochs} epochs")
        self.epoch = epoch
        self._rows = [self.index[i] for i in self.plan.epoch(epoch + 1).ids]

    @property
    def ids(self) -> list:
        """The example ids of the current epoch."""
        return list(self.plan.epoch(self.epoch + 1).ids)

    @property
    def temperature(self) -> float:
        return self.plan.epoch(self.epoch + 1).temperature

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int):
        return self.dataset[self._rows[i]]


class CurriculumCallback(TrainerCallback):
    """Switch a :class:`CurriculumDataset` to the next plan epoch and publish τ each epoch."""

    def __init__(
        self, view: CurriculumDataset, *, on_temperature: Callable[[float], None] | None = None
    ) -> None:
        sizes = set(view.plan.subset_sizes())
        if len(sizes) != 1:
            raise SpectrumKDError(
                f"the plan's subsets have different sizes {sorted(sizes)}; Trainer fixes the steps per "
                "epoch, so use PlanSampler in your own loop or `spectrumkd distill` for this plan"
            )
        self.view = view
        self.on_temperature = on_temperature
        self.temperature = view.temperature
        self.history: list[tuple[int, float, int]] = []  # (plan epoch, τ, subset size) as applied

    def on_train_begin(self, args, state, control, **kwargs):
        if int(args.num_train_epochs) != self.view.plan.num_epochs or args.max_steps > 0:
            raise SpectrumKDError(
                f"set num_train_epochs={self.view.plan.num_epochs} (the plan's epochs) and no max_steps; "
                f"got num_train_epochs={args.num_train_epochs}, max_steps={args.max_steps}"
            )

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)  # epochs completed so far
        self.view.set_epoch(epoch)
        self.temperature = self.view.temperature
        if self.on_temperature is not None:
            self.on_temperature(self.temperature)
        self.history.append((epoch + 1, self.temperature, len(self.view)))
