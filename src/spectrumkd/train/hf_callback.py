"""The curriculum inside Hugging Face ``Trainer`` and TRL trainers: one factory, a sampler, a callback.

Use (the README's "Quick start: Python" block, run verbatim by ``tests/test_examples.py``)::

    from spectrumkd.train.hf_callback import curriculum_trainer

    trainer = curriculum_trainer(SFTTrainer, plan, model=model, args=args, train_dataset=dataset)
    trainer.train()                    # any Trainer subclass: Trainer, SFTTrainer, GKD, Distillation
    trainer.curriculum.history         # what each epoch really trained on, and at which τ

``curriculum_trainer(cls, plan, **kwargs)`` builds ``cls`` (a ``transformers.Trainer`` subclass) with
the same keyword arguments you would give ``cls``, plus the plan. The trainer gets your *whole*
dataset, so TRL's ``isinstance(train_dataset, Dataset)`` checks, its dataset preparation and
``remove_unused_columns`` see an ordinary dataset. The Trainer's train sampler is replaced by a
:class:`CurriculumSampler` that yields, each epoch, the dataset rows of that plan epoch's ids
(shuffled with a generator seeded by ``args.data_seed or args.seed`` plus the epoch, as
:class:`spectrumkd.train.sampler.PlanSampler` does). Example ids come from the dataset's ``id``
column (read after TRL's preparation, so rows that TRL drops are accounted for), or from
``dataset_ids=`` in dataset order. ``train_sampling_strategy="group_by_length"`` groups each
epoch's rows into batches of similar length (:func:`spectrumkd.train.sampler.group_by_length`;
lengths from the ``args.length_column_name`` column, else the rows' ``input_ids``), still exactly
the plan's rows.

Why exact: the sampler runs in the main process and only hands row numbers to the data loader, so
data-loader workers (persistent or not, any number) never hold curriculum state that could go
stale. The plan epoch is derived from ``state.global_step // steps_per_epoch`` at every epoch start
(never from ``round(state.epoch)``), and the sampler refuses any other epoch, so a mid-epoch
``resume_from_checkpoint`` continues the right subset in the same order (the Trainer skips the
batches already trained) at the right τ. Gradient accumulation only groups batches.

τ reaches the loss: for TRL's GKD trainer and ``DistillationTrainer`` the adapters of
:mod:`spectrumkd.train.trl_adapters` pass the plan's τ to the divergence (and multiply it by τ² as
the paper's objective does, unless ``tau_squared=False``); TRL's own sampling temperature
(``args.temperature``) is left alone. For other trainers read ``trainer.curriculum.temperature`` in
your ``compute_loss``, or pass ``on_temperature=``.

Refused with :class:`SpectrumKDError` (they cannot be made exact): plans whose subsets differ in size
(``Trainer`` fixes the steps per epoch; use ``PlanSampler`` in your own loop or ``spectrumkd
distill`` for TCL baselines), ``num_train_epochs`` ≠ the plan's epochs, ``max_steps``, iterable
datasets, ``train_sampling_strategy`` other than ``random``/``sequential``/``group_by_length``
(and ``group_by_length`` for ``DistillationTrainer``, which generates its own completions), SFT packing, a dropped
last batch that would drop plan examples, several processes when the subset does not split into
whole batches, ``DistillationTrainer`` when the subset is not a whole number of generation batches,
and ``ignore_data_skip`` on a mid-epoch resume.

The ``id`` column: ``remove_unused_columns=True`` (the default) strips it before your collator;
the curriculum does not need it (the sampler works on row numbers), but a collator that reads
``id`` needs ``remove_unused_columns=False``.

Not here: the training loop itself (:mod:`spectrumkd.train.loop`), multi-process tests (the
divisibility rule is checked, the sharding is accelerate's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from spectrumkd import SpectrumKDError
from spectrumkd.train.sampler import check_epoch, epoch_order, plan_index, require_plan

__all__ = [
    "AppliedEpoch",
    "CurriculumCallback",
    "CurriculumSampler",
    "curriculum_trainer",
    "curriculum_trainer_class",
]


@dataclass(frozen=True)
class AppliedEpoch:
    """One entry of ``CurriculumCallback.history``: what an epoch of ``trainer.train()`` really did.

    ``examples`` counts the rows the sampler handed to training in this call (a resumed epoch
    counts only the rows after the batches that the Trainer skipped); ``first_step`` is the global
    step the epoch started from (not a multiple of ``steps`` after a mid-epoch resume);
    ``loss_temperatures`` are the τ values that an adapter's loss used (empty when the trainer's
    loss has no temperature of ours, e.g. ``SFTTrainer``).
    """

    epoch: int
    temperature: float
    examples: int
    steps: int
    first_step: int
    loss_temperatures: tuple[float, ...] = ()


class CurriculumSampler(Sampler[int]):
    """Dataset rows of the current plan epoch, as the Trainer's train sampler.

    ``set_epoch(e)`` (0-based, as the Trainer and accelerate call it) selects plan epoch ``e + 1``;
    once :meth:`pin` has fixed the epoch for the current Trainer epoch, any other value raises.
    With ``generation_batch`` > 0 (TRL ``DistillationTrainer``), the shuffled subset is cut into
    generation batches that are each yielded ``repeat`` times, as TRL's ``RepeatSampler`` does.
    With ``lengths`` (token counts in dataset order), each epoch's rows are grouped by length in
    batches of ``batch_size`` (:func:`spectrumkd.train.sampler.group_by_length`).
    """

    def __init__(
        self,
        plan,
        dataset_ids: Sequence,
        *,
        shuffle: bool = True,
        seed: int = 0,
        generation_batch: int = 0,
        repeat: int = 1,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        self.plan = plan
        self.index = plan_index(plan, dataset_ids)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.generation_batch = int(generation_batch)
        self.repeat = int(repeat)
        self.lengths = lengths
        self.batch_size = int(batch_size)
        self.epoch = 0
        self.pinned: int | None = None
        self.yielded = 0  # rows yielded by the current iteration (the epoch's count)

    def pin(self, epoch: int) -> None:
        """Fix the epoch that the Trainer's own ``set_epoch`` call must agree with."""
        self._check_range(epoch)
        self.pinned = epoch
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        self._check_range(epoch)
        if self.pinned is not None and epoch != self.pinned:
            raise SpectrumKDError(
                f"the Trainer set sampler epoch {epoch}, but global step and plan say epoch "
                f"{self.pinned}: the steps per epoch changed (batch size or dataset) since the run began"
            )
        self.epoch = epoch

    def _check_range(self, epoch: int) -> None:
        check_epoch(self.plan, epoch, hint="; set num_train_epochs to the plan's epochs")

    @property
    def temperature(self) -> float:
        return self.plan.epoch(self.epoch + 1).temperature

    def __len__(self) -> int:
        n = len(self.plan.epoch(self.epoch + 1).ids)
        if self.generation_batch:
            return (n // self.generation_batch) * self.generation_batch * self.repeat
        return n

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.plan, self.epoch + 1, self.index, seed=self.seed, shuffle=self.shuffle,
                            lengths=self.lengths, batch_size=self.batch_size)
        if self.generation_batch:
            g = self.generation_batch
            chunks = [order[i : i + g] for i in range(0, len(order) - g + 1, g)]
            order = [row for chunk in chunks for _ in range(self.repeat) for row in chunk]
        self.yielded = 0
        for row in order:
            self.yielded += 1
            yield row


class CurriculumCallback(TrainerCallback):
    """Derive the plan epoch from the global step, pin the sampler to it, publish τ, keep history.

    Built by :func:`curriculum_trainer`; ``trainer.curriculum`` is this object. ``temperature`` is
    the current plan epoch's τ; ``on_temperature(τ)`` is called at every epoch start.
    """

    def __init__(
        self,
        sampler: CurriculumSampler,
        *,
        on_temperature: Callable[[float], None] | None = None,
        rows_per_batch: int = 1,
        repeat: int = 1,
    ) -> None:
        self.sampler = sampler
        self.plan = sampler.plan
        self.on_temperature = on_temperature
        self.rows_per_batch = rows_per_batch  # rows of one data-loader batch (to count skipped rows)
        self.repeat = repeat  # times the sampler yields each row (DistillationTrainer: accumulation)
        self.temperature = sampler.temperature
        self.steps_per_epoch = 0
        self.history: list[AppliedEpoch] = []
        self._begin_step = 0
        self._skipped_rows = 0
        self._loss_taus: set[float] = set()

    def note_loss_temperature(self, tau: float) -> None:
        """Called by an adapter's loss with the τ it used."""
        self._loss_taus.add(float(tau))

    def on_train_begin(self, args, state, control, **kwargs):
        epochs = self.plan.num_epochs
        if args.num_train_epochs != epochs or args.max_steps > 0:
            raise SpectrumKDError(
                f"set num_train_epochs={epochs} (the plan's epochs) and no max_steps; "
                f"got num_train_epochs={args.num_train_epochs}, max_steps={args.max_steps}"
            )
        if state.max_steps % epochs:
            raise SpectrumKDError(f"{state.max_steps} training steps do not split into {epochs} epochs")
        self.steps_per_epoch = state.max_steps // epochs
        loader = kwargs.get("train_dataloader")
        if loader is not None:
            ga = args.gradient_accumulation_steps
            if -(-len(loader) // ga) != self.steps_per_epoch:
                raise SpectrumKDError(
                    f"the data loader gives {len(loader)} batches per epoch, which is not "
                    f"{self.steps_per_epoch} steps at gradient accumulation {ga}"
                )
        if state.global_step % self.steps_per_epoch and args.ignore_data_skip:
            raise SpectrumKDError(
                "ignore_data_skip=True on a mid-epoch resume would train the epoch's first batches "
                "twice and skip others; resume without ignore_data_skip"
            )

    def on_epoch_begin(self, args, state, control, **kwargs):
        spe = self.steps_per_epoch
        epoch, into = divmod(state.global_step, spe)  # plan epoch (0-based), steps already done in it
        self.sampler.pin(epoch)
        self.temperature = self.sampler.temperature
        if self.on_temperature is not None:
            self.on_temperature(self.temperature)
        self._begin_step = state.global_step
        self._skipped_rows = into * args.gradient_accumulation_steps * self.rows_per_batch
        self._loss_taus = set()

    def on_epoch_end(self, args, state, control, **kwargs):
        examples = (self.sampler.yielded - self._skipped_rows) // self.repeat
        self.history.append(
            AppliedEpoch(
                epoch=self.sampler.epoch + 1,
                temperature=self.temperature,
                examples=max(examples, 0),
                steps=state.global_step - self._begin_step,
                first_step=self._begin_step,
                loss_temperatures=tuple(sorted(self._loss_taus)),
            )
        )


def _column_ids(dataset) -> list | None:
    """The ``id`` column of a ``datasets.Dataset`` or a list of dict rows, else None."""
    names = getattr(dataset, "column_names", None)
    if names is not None:
        return list(dataset["id"]) if "id" in names else None
    try:
        first = dataset[0]
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(first, dict) and "id" in first:
        return [dataset[i]["id"] for i in range(len(dataset))]
    return None


def _resolve_ids(dataset, dataset_ids: Sequence | None) -> list:
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        raise SpectrumKDError(
            "the curriculum needs a map-style training dataset (rows by index), not an iterable one"
        )
    column = _column_ids(dataset)
    if dataset_ids is None:
        if column is None:
            raise SpectrumKDError(
                "the training dataset has no `id` column: pass dataset_ids=[...] (ids in dataset order)"
            )
        return column
    dataset_ids = list(dataset_ids)
    if len(dataset_ids) != len(dataset):
        raise SpectrumKDError(
            f"dataset_ids has {len(dataset_ids)} ids but the trainer's dataset has {len(dataset)} rows "
            "(did the trainer drop rows while preparing it?); give the dataset an `id` column instead"
        )
    if column is not None and column != dataset_ids:
        raise SpectrumKDError("dataset_ids disagrees with the dataset's own `id` column")
    return dataset_ids


class CurriculumTrainerMixin:
    """Mixed in front of a ``Trainer`` subclass by :func:`curriculum_trainer_class`."""

    curriculum: CurriculumCallback
    _curriculum_generation_batches = False  # TRL DistillationTrainer: repeated generation batches

    def __init__(
        self,
        *args,
        plan,
        dataset_ids: Sequence | None = None,
        on_temperature: Callable[[float], None] | None = None,
        tau_squared: bool = True,
        **kwargs,
    ) -> None:
        require_plan(plan)
        sizes = set(plan.subset_sizes())
        if len(sizes) != 1:
            raise SpectrumKDError(
                f"the plan's subsets have different sizes {sorted(sizes)}; Trainer fixes the steps per "
                "epoch, so use PlanSampler in your own loop or `spectrumkd distill` for this plan"
            )
        self.curriculum_tau_squared = tau_squared
        super().__init__(*args, **kwargs)
        args = self.args
        _check_args(self, args, plan)
        subset = sizes.pop()
        ga = args.gradient_accumulation_steps
        world = max(1, args.world_size)
        batch = args.per_device_train_batch_size
        if self._curriculum_generation_batches:
            generation_batch, repeat, rows_per_batch = batch * world * ga, ga, batch * ga
            if subset % generation_batch:
                raise SpectrumKDError(
                    f"DistillationTrainer generates for whole batches of {generation_batch} prompts "
                    f"(batch {batch} × processes {world} × accumulation {ga}) and drops the rest; the "
                    f"plan's subsets have {subset} examples: make it a multiple"
                )
            shuffle = bool(getattr(args, "shuffle_dataset", True))
        else:
            generation_batch, repeat, rows_per_batch = 0, 1, batch
            shuffle = args.train_sampling_strategy != "sequential"
            if world > 1 and subset % (batch * world):
                raise SpectrumKDError(
                    f"with {world} processes each subset of {subset} must split into whole batches of "
                    f"{batch} per process (accelerate repeats examples to even out a short last batch)"
                )
            if args.dataloader_drop_last and subset % (batch * world):
                raise SpectrumKDError(
                    f"dataloader_drop_last=True would drop {subset % (batch * world)} plan examples "
                    "every epoch; turn it off or make the subset a multiple of the batch size"
                )
        ids = _resolve_ids(self.train_dataset, dataset_ids)
        seed = args.data_seed if args.data_seed is not None else args.seed
        lengths = None
        if args.train_sampling_strategy == "group_by_length":
            lengths = _lengths(self.train_dataset, args.length_column_name)
        sampler = CurriculumSampler(
            plan, ids, shuffle=shuffle, seed=seed, generation_batch=generation_batch, repeat=repeat,
            lengths=lengths, batch_size=args.train_batch_size,
        )  # fmt: skip
        self.curriculum = CurriculumCallback(
            sampler, on_temperature=self._curriculum_temperature_hook(on_temperature),
            rows_per_batch=rows_per_batch, repeat=repeat,
        )  # fmt: skip
        self.add_callback(self.curriculum)

    def _curriculum_temperature_hook(self, user_hook):
        """Adapters override this to also set their trainer's own temperature attribute."""
        return user_hook

    def _get_train_sampler(self, *args, **kwargs):
        return self.curriculum.sampler


def _lengths(dataset, column: str) -> list[int]:
    """Row lengths for ``group_by_length``: the ``column`` column, else the rows' ``input_ids``."""
    names = getattr(dataset, "column_names", None) or []
    if column in names:
        return [int(n) for n in dataset[column]]
    if "input_ids" in names:
        return [len(row) for row in dataset["input_ids"]]
    try:
        return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    except (TypeError, KeyError, IndexError):
        raise SpectrumKDError(f"train_sampling_strategy='group_by_length' needs a {column!r} column "
                              "or input_ids in the rows") from None


def _check_args(trainer, args, plan) -> None:
    if args.num_train_epochs != plan.num_epochs or args.max_steps > 0:
        raise SpectrumKDError(
            f"set num_train_epochs={plan.num_epochs} (the plan's epochs) and no max_steps; "
            f"got num_train_epochs={args.num_train_epochs}, max_steps={args.max_steps}"
        )
    strategy = getattr(args, "train_sampling_strategy", "random")
    if strategy not in ("random", "sequential", "group_by_length"):
        raise SpectrumKDError(
            f"train_sampling_strategy={strategy!r} would be replaced by the curriculum's sampler; use "
            "'random' (shuffle within each epoch's subset), 'group_by_length' or 'sequential'"
        )
    if strategy == "group_by_length" and trainer._curriculum_generation_batches:
        raise SpectrumKDError("train_sampling_strategy='group_by_length': DistillationTrainer generates "
                              "its completions, so row lengths are unknown; use 'random'")
    if getattr(args, "packing", False):
        raise SpectrumKDError("SFT packing merges examples across rows; the curriculum needs packing=False")


def curriculum_trainer_class(trainer_cls: type) -> type:
    """``trainer_cls`` with the curriculum: sampler, callback and (for TRL KD trainers) τ in the loss.

    A fresh subclass each call; its constructor takes ``trainer_cls``'s keyword arguments plus
    ``plan``, ``dataset_ids=None``, ``on_temperature=None`` and ``tau_squared=True``.
    """
    from transformers import Trainer

    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
        raise SpectrumKDError(f"{trainer_cls!r} is not a transformers.Trainer subclass")
    from spectrumkd.train.trl_adapters import adapter_for

    bases = (CurriculumTrainerMixin, trainer_cls)
    adapter = adapter_for(trainer_cls)
    if adapter is not None:
        bases = (adapter, *bases)
    return type(f"Curriculum{trainer_cls.__name__}", bases, {})


def curriculum_trainer(
    trainer_cls: type,
    plan,
    *,
    dataset_ids: Sequence | None = None,
    on_temperature: Callable[[float], None] | None = None,
    tau_squared: bool = True,
    **trainer_kwargs,
):
    """Build ``trainer_cls(**trainer_kwargs)`` that trains each epoch on the plan's ids at its τ.

    ``trainer_kwargs`` must include ``train_dataset`` (the whole dataset) and ``args`` with
    ``num_train_epochs = plan.num_epochs``. See the module docstring for what is refused and why.
    """
    cls = curriculum_trainer_class(trainer_cls)
    return cls(
        plan=plan, dataset_ids=dataset_ids, on_temperature=on_temperature,
        tau_squared=tau_squared, **trainer_kwargs,
    )  # fmt: skip
