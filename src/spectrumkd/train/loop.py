"""The training loop on ``accelerate``, driven by the curriculum plan, in named steps.

For each plan epoch: take its ids and τ, shuffle them with a generator seeded by ``seed + epoch``
and (``optim.group_by_length``, the default) group them into steps of similar length
(:func:`spectrumkd.train.sampler.epoch_order`), cut the order into optimizer steps of
``batch_size × grad_accumulation × processes`` examples, give each process its share of every
micro-batch, and per step

1. (GKD) with probability λ replace the responses by the student's own samples (T = 1), and
   train that step on the divergence alone (:func:`on_policy_loss`);
2. count the response tokens of the whole step over accumulation *and* processes;
3. per micro-batch: teacher forward (frozen, eval, no grad) or the cached top-k targets, student
   forward, ``kd_loss``/``sparse_kd_loss`` normalised by that global count, backward (gradient
   sync only on the last micro-batch);
4. clip, AdamW step, learning-rate step (warm-up then cosine/linear decay over the plan's total
   optimizer steps), log.

Because the loss is a sum over tokens divided by the global count, "batch 4 × accumulation 1",
"batch 1 × accumulation 4" and "2 processes × batch 2" give the same gradients. (DDP averages
gradients over processes, so each process's loss is multiplied by the process count.) A process
whose share of the last, short micro-batch is empty runs a zero-weighted dummy forward so that
DDP's collective calls stay matched.

With held-out rows (``heldout``), the held-out curve (CE, KL to the teacher, entropy:
:func:`spectrumkd.train.validation.heldout_curve`) is logged as ``curve`` lines at step 0 and at
``validation.curve_points`` evenly spaced steps, each right after its step and before any save
of it, so a resumed run (whose ``metrics.jsonl`` is cut back to its checkpoint) recomputes only
the points it lost.

At each epoch end: validation (optional), the epoch line of ``metrics.jsonl``, and a checkpoint
generation (:mod:`spectrumkd.train.checkpoint`); ``checkpoints/best`` follows validation ROUGE-L
(the final model without validation). ``save_every_steps`` adds mid-epoch generations. Ctrl-C
saves at the last completed step and re-raises; ``resume=True`` continues from the newest complete
generation (printing which), cuts ``metrics.jsonl`` back to its step, and gives the same losses
as an uninterrupted run.
Mixed precision (bf16 on a GPU that supports it) comes from ``accelerate``; CPUs stay fp32.

The code reads top-down: :func:`run_loop` = :func:`prepare` → :func:`log_curve` (step 0) → for
each epoch :func:`run_epoch` (→ for each step :func:`train_step`, then :func:`after_step`) →
:func:`end_epoch`. The steps take
the config sections they read (:class:`LoopConfig`: loss, optim, validation, run options), not
the whole ``RunConfig``; :func:`train` is the ``RunConfig`` adapter. One micro-batch's loss is
:func:`spectrumkd.train.micro_loss.micro_loss`, which validation uses too.

Not here: loading models and data, scoring and planning (:mod:`spectrumkd.train.pipeline`).
References: torchtune's ``knowledge_distillation_single_device.py`` (the loop shape), TRL's
``GKDTrainer`` (on-policy mixture), transformers' ``num_items_in_batch`` (global token count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator, Example
from spectrumkd.rundir import STATE_FILE, RunDir
from spectrumkd.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from spectrumkd.train.config import LossConfig, OptimConfig, RunConfig, ValidationConfig
from spectrumkd.train.metrics import MetricsWriter, progress_bar
from spectrumkd.train.micro_loss import micro_loss
from spectrumkd.train.onpolicy import sample_responses, use_student_samples
from spectrumkd.train.sampler import epoch_order, plan_index

__all__ = ["LoopConfig", "RunOptions", "TrainResult", "make_accelerator", "plan_steps", "run_loop",
           "step_size", "train"]

OOM_HINT = (
    "out of memory in a training step ({what}). Try, in this order: a smaller loss.chunk_size (the "
    "chunked loss never holds the full [tokens × vocab] logits of both models), a smaller "
    "optim.batch_size with a larger optim.grad_accumulation (same global batch) or a smaller "
    "curriculum.batch_tokens for scoring, data.max_length, or teacher_cache.enabled=true (the "
    "teacher's top-k log-probs from disk, no teacher in memory)."
)


@dataclass
class TrainResult:
    """What a run did: per-step losses (global, as logged) and the ids each epoch trained on."""

    losses: list[float] = field(default_factory=list)
    epoch_ids: dict[int, list] = field(default_factory=dict)
    state: TrainState = field(default_factory=TrainState)
    validation: dict[int, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOptions:
    """The run-wide switches the loop reads (``RunConfig``'s top-level fields, LoRA's merge)."""

    seed: int = 0
    """Seeds each epoch's shuffle (``seed + epoch``) and GKD's coin flips and samples."""
    log_every: int = 1
    """Write every n-th step line of ``metrics.jsonl``."""
    save_every_steps: int | None = None
    """Also save a checkpoint generation every n optimizer steps (unset: epoch ends only)."""
    tensorboard: bool = False
    progress: bool = True
    merge_lora: bool = False
    """Write ``merged/`` beside each checkpoint's LoRA adapter."""


@dataclass(frozen=True)
class LoopConfig:
    """The sections of a ``RunConfig`` that the loop reads, and nothing more."""

    loss: LossConfig
    optim: OptimConfig
    validation: ValidationConfig
    options: RunOptions

    @classmethod
    def from_run_config(cls, cfg: RunConfig) -> LoopConfig:
        options = RunOptions(
            seed=cfg.seed, log_every=cfg.log_every, save_every_steps=cfg.save_every_steps,
            tensorboard=cfg.tensorboard, progress=cfg.progress,
            merge_lora=cfg.lora.enabled and cfg.lora.merge_on_save,
        )  # fmt: skip
        return cls(loss=cfg.loss, optim=cfg.optim, validation=cfg.validation, options=options)


def step_size(cfg: RunConfig, num_processes: int) -> int:
    """Examples per optimizer step: batch size × accumulation × processes."""
    return _examples_per_step(cfg.optim, num_processes)


def _examples_per_step(optim: OptimConfig, num_processes: int) -> int:
    return optim.batch_size * optim.grad_accumulation * num_processes


def plan_steps(plan, examples_per_step: int) -> list[int]:
    """Optimizer steps of each plan epoch (the last step of an epoch may be short).

    >>> from spectrumkd.curriculum import make_plan
    >>> plan_steps(make_plan("full", list(range(10)), list(range(10)), epochs=2), 4)
    [3, 3]
    """
    return [math.ceil(len(e.ids) / examples_per_step) for e in plan.epochs]


def make_accelerator(cfg: RunConfig):
    """An ``accelerate.Accelerator``: bf16 mixed precision on a capable GPU with ``auto``, fp32 on CPU."""
    return _accelerator(cfg.optim)


def _accelerator(optim: OptimConfig):
    from accelerate import Accelerator

    mp = optim.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


def _scheduler(optim: OptimConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    warmup = optim.warmup_steps
    if warmup is None:
        warmup = round(optim.warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[optim.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _micro_batches(chunk: list[int], per_micro: int, rank: int, world: int) -> list[list[int]]:
    """This process's share of each micro-batch of one optimizer step (may be empty)."""
    return [chunk[a : a + per_micro][rank::world] for a in range(0, len(chunk), per_micro)]


@dataclass
class Trainable:
    """The student as accelerate prepared it, with its optimizer and learning-rate schedule."""

    model: torch.nn.Module
    """Wrapped (DDP under several processes): forward and backward go through it."""
    unwrapped: torch.nn.Module
    """The student itself: on-policy samples, validation, checkpoints."""
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: object


@dataclass
class Loop:
    """What :func:`prepare` builds and the steps share (one run of :func:`run_loop`)."""

    sections: LoopConfig
    accelerator: object
    trainable: Trainable
    tokenizer: object
    collate: Collator
    vocab: int
    """The tokenizer's length: the vocabulary that student and teacher share."""
    examples: Sequence[Example]
    plan: object
    index: dict
    teacher: torch.nn.Module | None
    teacher_cache: object
    validation_examples: Sequence[Example]
    run_dir: RunDir | None
    state: TrainState
    result: TrainResult
    metrics: MetricsWriter
    bar: object
    steps_per_epoch: list[int]
    per_step: int
    on_step: Callable[[dict], None] | None
    heldout: object = None
    """The held-out curve's rows (:class:`~spectrumkd.train.validation.HeldOut`), or None."""
    curve_at: frozenset = frozenset()
    """Global steps with a curve point (step 0 = before training)."""
    curve_done: set = field(default_factory=set)
    """Curve points already in ``metrics.jsonl`` (a resumed run keeps those up to its step)."""
    consistent: bool = True
    """False while the optimizer has stepped but the counters do not say so (no Ctrl-C save)."""
    saving_best: bool = False
    """A best save is in progress: one cut short by Ctrl-C makes the interrupt save the best."""


def train(
    cfg: RunConfig,
    *,
    student,
    tokenizer,
    examples: Sequence[Example],
    plan,
    teacher=None,
    teacher_cache=None,
    validation_examples: Sequence[Example] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    accelerator=None,
    on_step: Callable[[dict], None] | None = None,
    heldout=None,
) -> TrainResult:
    """Train ``student`` on ``plan`` over ``examples`` as ``cfg`` says; returns a :class:`TrainResult`.

    ``teacher`` (online KD/GKD) or ``teacher_cache`` (a :class:`~spectrumkd.train.teacher_cache.
    TeacherCache`, off-policy KD) supplies the targets; neither for ``loss.mode=sft``. With
    ``run_dir`` set, ``metrics.jsonl`` and ``checkpoints/`` are written there, and ``resume``
    continues from ``checkpoints/last``. ``on_step(row)`` is called after every optimizer step
    with the step's metrics (tests use it to interrupt a run). A fresh run refuses a ``run_dir``
    that already holds checkpoints. ``heldout`` (a :class:`~spectrumkd.train.validation.HeldOut`)
    turns on the held-out curve. The ``RunConfig`` form of :func:`run_loop`.
    """
    return run_loop(
        LoopConfig.from_run_config(cfg), student=student, tokenizer=tokenizer, examples=examples,
        plan=plan, teacher=teacher, teacher_cache=teacher_cache,
        validation_examples=validation_examples, run_dir=run_dir, resume=resume,
        accelerator=accelerator, on_step=on_step, heldout=heldout,
    )  # fmt: skip


def run_loop(sections: LoopConfig, *, student, tokenizer, examples: Sequence[Example], plan,
             teacher=None, teacher_cache=None, validation_examples: Sequence[Example] | None = None,
             run_dir: str | Path | None = None, resume: bool = False, accelerator=None,
             on_step: Callable[[dict], None] | None = None, heldout=None) -> TrainResult:
    """:func:`train` with the sections it reads (:class:`LoopConfig`) instead of a ``RunConfig``."""
    loop = prepare(
        sections, student=student, tokenizer=tokenizer, examples=examples, plan=plan,
        teacher=teacher, teacher_cache=teacher_cache, validation_examples=validation_examples,
        run_dir=run_dir, resume=resume, accelerator=accelerator, on_step=on_step, heldout=heldout,
    )  # fmt: skip
    try:
        log_curve(loop)  # step 0 of a fresh run, or the point an interrupt cut short
        for epoch in range(loop.state.epoch, plan.num_epochs + 1):
            run_epoch(loop, epoch)
    except KeyboardInterrupt:
        save_on_interrupt(loop)
        raise
    finally:
        loop.bar.close()
        loop.metrics.close()
    loop.result.state = loop.state
    return loop.result


# --- prepare -------------------------------------------------------------------------------------


def prepare(sections: LoopConfig, *, student, tokenizer, examples, plan, teacher, teacher_cache,
            validation_examples, run_dir, resume: bool, accelerator, on_step, heldout=None) -> Loop:
    """Check the targets, build the optimizer and schedule, restore or refuse checkpoints."""
    _check_targets(sections.loss.mode, teacher, teacher_cache)
    accelerator = accelerator or _accelerator(sections.optim)
    index = plan_index(plan, [ex.id for ex in examples])  # errors name plan ids not in the data
    per_step = _examples_per_step(sections.optim, accelerator.num_processes)
    steps_per_epoch = plan_steps(plan, per_step)
    trainable = _prepare_models(sections.optim, student, teacher, accelerator,
                                total_steps=sum(steps_per_epoch))
    rd = RunDir(run_dir) if run_dir is not None else None
    state = _start_state(rd, trainable, accelerator, resume=resume, steps_per_epoch=steps_per_epoch)
    metrics, bar = _books(sections.options, rd, accelerator.is_main_process,
                          total_steps=sum(steps_per_epoch), done=state.global_step)
    return Loop(
        sections=sections, accelerator=accelerator, trainable=trainable, tokenizer=tokenizer,
        collate=Collator(tokenizer.pad_token_id), vocab=len(tokenizer), examples=examples,
        plan=plan, index=index, teacher=teacher, teacher_cache=teacher_cache,
        validation_examples=validation_examples or [], run_dir=rd, state=state,
        result=TrainResult(state=state), metrics=metrics, bar=bar,
        steps_per_epoch=steps_per_epoch, per_step=per_step, on_step=on_step,
        heldout=heldout, curve_at=_curve_at(sections.validation, heldout, sum(steps_per_epoch)),
        curve_done=_curves_logged(rd),
    )  # fmt: skip


def _curve_at(validation: ValidationConfig, heldout, total_steps: int) -> frozenset:
    from spectrumkd.train.validation import curve_steps

    return curve_steps(total_steps, validation.curve_points) if heldout is not None else frozenset()


def _curves_logged(rd: RunDir | None) -> set:
    """Steps whose curve line ``metrics.jsonl`` already holds (after its cut back on resume, which
    every process has waited for), read by every process so that all agree on the next point."""
    if rd is None:
        return set()
    return {int(row["step"]) for row in rd.metrics() if row.get("kind") == "curve"}


def _check_targets(mode: str, teacher, teacher_cache) -> None:
    if mode != "sft" and teacher is None and teacher_cache is None:
        raise SpectrumKDError(f"loss.mode={mode} needs a teacher or a teacher cache")
    if mode == "gkd" and teacher is None:
        raise SpectrumKDError("loss.mode=gkd needs the teacher in memory (on-policy samples are new)")


def _prepare_models(optim: OptimConfig, student, teacher, accelerator, *, total_steps: int) -> Trainable:
    """Student in train mode (gradient checkpointing if asked), frozen teacher on the device,
    AdamW over the trainable parameters, the schedule over ``total_steps``, accelerate's wrap."""
    if optim.gradient_checkpointing:
        student.gradient_checkpointing_enable()
        student.config.use_cache = False
    student.train()
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        teacher.to(accelerator.device)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
    )
    scheduler = _scheduler(optim, optimizer, total_steps)
    model, optimizer = accelerator.prepare(student, optimizer)
    return Trainable(model=model, unwrapped=accelerator.unwrap_model(model), params=params,
                     optimizer=optimizer, scheduler=scheduler)


def _start_state(rd: RunDir | None, trainable: Trainable, accelerator, *, resume: bool,
                 steps_per_epoch: list[int]) -> TrainState:
    """A fresh state (refusing a run directory with checkpoints) or the newest complete one's,
    which must fit the plan (``steps_per_epoch``)."""
    state = TrainState()
    is_main = accelerator.is_main_process
    if resume:
        found = rd.latest_checkpoint() if rd is not None else None
        if found is None:
            raise SpectrumKDError(f"--resume: no complete checkpoint in {rd.checkpoints if rd else None}")
        state = load_checkpoint(found, model=trainable.unwrapped, optimizer=trainable.optimizer,
                                scheduler=trainable.scheduler, rank=accelerator.process_index)
        state.check_against(steps_per_epoch, source=str(found / STATE_FILE))
        if is_main:
            rd.repair_links()  # a kill may have come between a commit and the links
            print(f"resuming from {found} (epoch {state.epoch}, {state.step_in_epoch} steps into it, "
                  f"global step {state.global_step})", flush=True)
    elif rd is not None and (rd.has_checkpoint() or rd.checkpoints.exists()):
        raise SpectrumKDError(f"{rd.checkpoints} exists: resume the run or use another run directory")
    if rd is not None and is_main:
        rd.truncate_metrics(global_step=state.global_step, epoch=state.epoch)
    accelerator.wait_for_everyone()
    return state


def _books(options: RunOptions, rd: RunDir | None, is_main: bool, *, total_steps: int, done: int):
    """``(metrics writer, progress bar)``: files only on the main process of a run with a directory."""
    write = rd is not None and is_main
    metrics = MetricsWriter(
        rd.metrics_file if write else None,
        tensorboard_dir=rd.path / "tensorboard" if write and options.tensorboard else None,
    )
    bar = progress_bar(total_steps, initial=done, disable=not (options.progress and is_main))
    return metrics, bar


# --- each epoch, each step -----------------------------------------------------------------------


def run_epoch(loop: Loop, epoch: int) -> None:
    """The plan epoch's shuffled order, step by step, then :func:`end_epoch`.

    A resumed epoch starts at its first step not done (the order is deterministic) and carries
    on its loss sum.
    """
    ep = loop.plan.epoch(epoch)
    order = _epoch_order(loop, epoch)
    loop.result.epoch_ids[epoch] = [loop.examples[i].id for i in order]
    started = time.perf_counter()
    n_steps = loop.steps_per_epoch[epoch - 1]
    for step_i in range(loop.state.step_in_epoch, n_steps):
        chunk = order[step_i * loop.per_step : (step_i + 1) * loop.per_step]
        row = train_step(loop, chunk, epoch=epoch, temperature=ep.temperature,
                         where=f"epoch {epoch}, step {step_i + 1}")
        after_step(loop, row, last_of_epoch=step_i + 1 == n_steps)
    end_epoch(loop, epoch, started=started)


def _epoch_order(loop: Loop, epoch: int) -> list[int]:
    """The epoch's dataset indices, the same on every process. With ``optim.group_by_length``,
    grouped in runs of one optimizer step (``batch_size × grad_accumulation × processes``, each
    sorted longest first), so its micro-batches and each process's share hold rows of similar
    length, and "batch 4 × accumulation 1" and "batch 1 × accumulation 4" keep the same steps."""
    lengths = [len(ex.input_ids) for ex in loop.examples] if loop.sections.optim.group_by_length else None
    return epoch_order(loop.plan, epoch, loop.index, seed=loop.sections.options.seed, lengths=lengths,
                       batch_size=loop.per_step)


def train_step(loop: Loop, chunk: list[int], *, epoch: int, temperature: float, where: str) -> dict:
    """One optimizer step over the examples ``chunk`` (dataset indices); returns its metrics row.

    This process's share of each micro-batch (GKD: maybe the student's own samples), the token
    count over the whole step and all processes, forward/backward per micro-batch, the update.
    """
    t0 = time.perf_counter()
    acc = loop.accelerator
    micro = _step_shares(loop, chunk)
    on_policy = _coin_for_samples(loop.sections, loop.state.global_step)
    loss_cfg = loop.sections.loss
    if on_policy:
        micro = _student_samples(loop, micro)
        loss_cfg = on_policy_loss(loss_cfg)
    # A stand-in for an empty share: the step's first example, at weight 0.
    stand_in = loop.examples[chunk[0]]
    batches = [loop.collate(exs if exs else [stand_in]) for exs in micro]
    local = sum(int((b["labels"][:, 1:] != -100).sum()) for b, exs in zip(batches, micro) if exs)
    num_tokens = int(acc.reduce(torch.tensor(local, device=acc.device), "sum"))
    sums = _accumulate_gradients(loop, batches, micro, loss_cfg, stand_in_id=stand_in.id,
                                 temperature=temperature, num_tokens=num_tokens, where=where)
    grad_norm = None
    if loop.sections.optim.grad_clip is not None:
        grad_norm = acc.clip_grad_norm_(loop.trainable.params, loop.sections.optim.grad_clip)
    loss = float(sums[0])
    if not math.isfinite(loss):  # every process holds the same reduced sum: all stop here
        raise SpectrumKDError(
            f"{where}: the loss is {loss}; stopped before the update, the last checkpoint is "
            "untouched (lower optim.lr, or check the data and the student's weights)")
    lr = _update(loop, loss)
    loop.result.losses.append(loss)
    dt = time.perf_counter() - t0
    return {
        "step": loop.state.global_step, "epoch": epoch, "loss": loss, "ce": float(sums[1]),
        "kd": float(sums[2]), "temperature": temperature, "lr": lr, "tokens": num_tokens,
        "tokens_per_s": num_tokens / dt if dt > 0 else None,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "on_policy": on_policy,
    }  # fmt: skip


def _step_shares(loop: Loop, chunk: list[int]) -> list[list[Example]]:
    """This process's examples of each micro-batch of the step (a share may be empty)."""
    acc = loop.accelerator
    world = acc.num_processes
    shares = _micro_batches(chunk, loop.sections.optim.batch_size * world, acc.process_index, world)
    return [[loop.examples[i] for i in share] for share in shares]


def _coin_for_samples(sections: LoopConfig, global_step: int) -> bool:
    """GKD: does this step train on the student's own samples? (Same answer on every process.)"""
    loss = sections.loss
    return loss.mode == "gkd" and use_student_samples(sections.options.seed, global_step, loss.gkd_lambda)


def on_policy_loss(loss: LossConfig) -> LossConfig:
    """The objective of a step on the student's own samples: the divergence alone.

    ``ce_weight`` weighs the CE on *dataset* responses; on a sample the CE would train the
    student to imitate itself (Agarwal et al. 2024 use the divergence alone on-policy), so its
    weight moves to the divergence.

    >>> on_policy_loss(LossConfig(mode="gkd", divergence="rkl", ce_weight=0.3)).ce_weight
    0.0
    """
    return replace(loss, ce_weight=0.0)


def _student_samples(loop: Loop, micro: list[list[Example]]) -> list[list[Example]]:
    """The micro-batches with the student's own responses (T = 1), seeded per step, rank, batch."""
    seed, step = loop.sections.options.seed, loop.state.global_step
    rank, tok = loop.accelerator.process_index, loop.tokenizer
    return [
        sample_responses(
            loop.trainable.unwrapped, exs, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, max_new_tokens=loop.sections.loss.gkd_max_new_tokens,
            seed=(seed * 1_000_003 + step * 1009 + rank * 31 + a) % 2**31,
        ) if exs else exs
        for a, exs in enumerate(micro)
    ]  # fmt: skip


def _accumulate_gradients(loop: Loop, batches: list[dict], micro: list[list[Example]],
                          loss_cfg: LossConfig, *,
                          stand_in_id, temperature: float, num_tokens: int, where: str):
    """Forward and backward over the step's micro-batches, gradient sync on the last only;
    returns the step's global ``[total, ce, kd]`` (each normalised by ``num_tokens``)."""
    acc, model = loop.accelerator, loop.trainable.model
    world = acc.num_processes
    sums = torch.zeros(3, device=acc.device)
    for a, (batch, exs) in enumerate(zip(batches, micro)):
        sync = a == len(batches) - 1
        with acc.no_sync(model) if not sync else nullcontext():
            try:
                with acc.autocast():
                    out = micro_loss(
                        model, batch, loss=loss_cfg, temperature=temperature,
                        num_tokens=num_tokens, vocab=loop.vocab, device=acc.device,
                        teacher=loop.teacher, teacher_cache=loop.teacher_cache,
                        ids=[ex.id for ex in exs] or [stand_in_id],
                    )  # fmt: skip
            except torch.OutOfMemoryError as exc:
                raise SpectrumKDError(OOM_HINT.format(what=where)) from exc
            # DDP averages gradients over processes: scale back to the global sum / num_tokens.
            weight = float(world) if exs else 0.0
            acc.backward(out.total * weight)
        if exs:
            sums += torch.stack([out.total.detach().float(), out.ce.float(), out.kd.float()])
    return acc.reduce(sums, "sum")


def _update(loop: Loop, loss: float) -> float:
    """Optimizer and schedule step, then the counters; returns the learning rate used."""
    t, state = loop.trainable, loop.state
    loop.consistent = False  # until the counters say this step is done (Ctrl-C save)
    t.optimizer.step()
    lr = t.scheduler.get_last_lr()[0]
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    state.step_in_epoch += 1
    state.global_step += 1
    state.epoch_loss_sum += loss
    loop.consistent = True
    return lr


def after_step(loop: Loop, row: dict, *, last_of_epoch: bool) -> None:
    """Log the step (and its curve point), move the bar, save a mid-epoch generation when due,
    call ``on_step``."""
    options, state = loop.sections.options, loop.state
    if state.global_step % options.log_every == 0:
        loop.metrics.step(**row)
    log_curve(loop)
    loop.bar.update(1)
    loop.bar.set_postfix(epoch=row["epoch"], loss=f"{row['loss']:.3f}", tau=f"{row['temperature']:.2f}")
    every = options.save_every_steps
    if loop.run_dir is not None and every and state.global_step % every == 0 and not last_of_epoch:
        save(loop)  # mid-epoch generation (the epoch end saves anyway)
    if loop.on_step is not None:
        loop.on_step(row)


# --- end of epoch --------------------------------------------------------------------------------


def end_epoch(loop: Loop, epoch: int, *, started: float) -> None:
    """Validation (optional), the epoch line of ``metrics.jsonl``, the best model, a checkpoint."""
    state, tau = loop.state, loop.plan.epoch(epoch).temperature
    steps = state.step_in_epoch  # a resumed epoch counts the steps done before the interrupt too
    summary = {"epoch": epoch, "subset_size": len(loop.plan.epoch(epoch).ids), "temperature": tau,
               "steps": steps, "epoch_loss": state.epoch_loss_sum / max(steps, 1)}
    if loop.validation_examples:
        summary.update(_validate_epoch(loop, temperature=tau))
        loop.result.validation[epoch] = {k: v for k, v in summary.items() if k.startswith("val_")}
    summary["epoch_time_s"] = time.perf_counter() - started
    improved = _track_best(state, summary.get("val_rougeL"), epoch)
    loop.metrics.epoch(**summary, best_epoch=state.best_epoch)
    loop.consistent = False
    state.epoch, state.step_in_epoch, state.epoch_loss_sum = epoch + 1, 0, 0.0
    state.finished = epoch == loop.plan.num_epochs
    loop.consistent = True
    if loop.run_dir is not None:
        save(loop, best=improved or (not loop.validation_examples and state.finished))


def _validate_epoch(loop: Loop, *, temperature: float) -> dict:
    """``val_*`` of the epoch, computed on the main process (the others wait)."""
    out = {}
    if loop.accelerator.is_main_process:
        from spectrumkd.train.validation import validate

        v = loop.sections.validation
        out = validate(loop.trainable.unwrapped, loop.tokenizer, loop.validation_examples,
                       loss=loop.sections.loss, teacher=loop.teacher, temperature=temperature,
                       max_new_tokens=v.max_new_tokens, batch_size=v.batch_size)
    loop.accelerator.wait_for_everyone()
    return out


def log_curve(loop: Loop) -> None:
    """The held-out curve line of this step when it is a curve point not logged yet (computed on
    the main process; the others wait)."""
    step = loop.state.global_step
    if step not in loop.curve_at or step in loop.curve_done:
        return
    if loop.accelerator.is_main_process:
        from spectrumkd.train.validation import heldout_curve

        values = heldout_curve(loop.trainable.unwrapped, loop.heldout,
                               batch_size=loop.sections.validation.batch_size)
        loop.metrics.curve(step=step, epoch=loop.state.epoch, **values)
    loop.curve_done.add(step)
    loop.accelerator.wait_for_everyone()


def _track_best(state: TrainState, score: float | None, epoch: int) -> bool:
    """Record ``score`` (validation ROUGE-L) as the best when it is; True when it is."""
    if score is not None and (state.best_score is None or score > state.best_score):
        state.best_score, state.best_epoch = score, epoch
        return True
    return False


def save(loop: Loop, *, best: bool = False) -> None:
    """Write the next checkpoint generation (every process calls it); ``best`` moves ``best``."""
    state, t, acc = loop.state, loop.trainable, loop.accelerator
    loop.saving_best = best
    state.generation += 1
    if best:
        state.best_generation = state.generation
    save_checkpoint(
        loop.run_dir.path, model=t.unwrapped, optimizer=t.optimizer, scheduler=t.scheduler,
        state=state, plan=loop.plan, tokenizer=loop.tokenizer, merge=loop.sections.options.merge_lora,
        rank=acc.process_index, is_main=acc.is_main_process,
    )  # fmt: skip
    loop.saving_best = False


def save_on_interrupt(loop: Loop) -> None:
    """Ctrl-C: save at the last completed step when the counters agree with the weights."""
    rd, is_main = loop.run_dir, loop.accelerator.is_main_process
    if rd is not None and loop.consistent:
        save(loop, best=loop.saving_best)
        if is_main:
            print(f"\ninterrupted: resumable state saved to {rd.latest_checkpoint()} "
                  f"(epoch {loop.state.epoch}, step {loop.state.step_in_epoch}); rerun with --resume")
    elif rd is not None and is_main:
        print(f"\ninterrupted mid-update; the last complete checkpoint is {rd.latest_checkpoint()}")
