"""The training loop: one readable function on ``accelerate``, driven by the curriculum plan.

For each plan epoch: take its ids and τ, shuffle them with a generator seeded by ``seed + epoch``
(:func:`spectrumkd.train.sampler.epoch_order`), cut the order into optimizer steps of
``batch_size × grad_accumulation × processes`` examples, give each process its share of every
micro-batch, and per step

1. (GKD) with probability λ replace the responses by the student's own samples (T = 1);
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

At each epoch end: validation (optional), the epoch line of ``metrics.jsonl``, and a checkpoint
generation (:mod:`spectrumkd.train.checkpoint`); ``checkpoints/best`` follows validation ROUGE-L
(the final model without validation). ``save_every_steps`` adds mid-epoch generations. Ctrl-C
saves at the last completed step and re-raises; ``resume=True`` continues from the newest complete
generation (printing which), cuts ``metrics.jsonl`` back to its step, and gives the same losses
as an uninterrupted run.
Mixed precision (bf16 on a GPU that supports it) comes from ``accelerate``; CPUs stay fp32.

Not here: loading models and data, scoring and planning (:mod:`spectrumkd.train.pipeline`).
References: torchtune's ``knowledge_distillation_single_device.py`` (the loop shape), TRL's
``GKDTrainer`` (on-policy mixture), transformers' ``num_items_in_batch`` (global token count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator, Example
from spectrumkd.losses import default_chunk_size, kd_loss, shared_vocab_logits, sparse_kd_loss
from spectrumkd.rundir import RunDir
from spectrumkd.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from spectrumkd.train.config import RunConfig
from spectrumkd.train.metrics import MetricsWriter, progress_bar
from spectrumkd.train.onpolicy import sample_responses, use_student_samples
from spectrumkd.train.sampler import epoch_order, plan_index

__all__ = ["TrainResult", "make_accelerator", "plan_steps", "train"]

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


def step_size(cfg: RunConfig, num_processes: int) -> int:
    """Examples per optimizer step: batch size × accumulation × processes."""
    return cfg.optim.batch_size * cfg.optim.grad_accumulation * num_processes


def plan_steps(plan, examples_per_step: int) -> list[int]:
    """Optimizer steps of each plan epoch (the last step of an epoch may be short).

    >>> from spectrumkd.curriculum import make_plan
    >>> plan_steps(make_plan("full", list(range(10)), list(range(10)), epochs=2), 4)
    [3, 3]
    """
    return [math.ceil(len(e.ids) / examples_per_step) for e in plan.epochs]


def make_accelerator(cfg: RunConfig):
    """An ``accelerate.Accelerator``: bf16 mixed precision on a capable GPU with ``auto``, fp32 on CPU."""
    from accelerate import Accelerator

    mp = cfg.optim.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


def _scheduler(cfg: RunConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    warmup = cfg.optim.warmup_steps
    if warmup is None:
        warmup = round(cfg.optim.warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.optim.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _micro_batches(chunk: list[int], per_micro: int, rank: int, world: int) -> list[list[int]]:
    """This process's share of each micro-batch of one optimizer step (may be empty)."""
    return [chunk[a : a + per_micro][rank::world] for a in range(0, len(chunk), per_micro)]


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
) -> TrainResult:
    """Train ``student`` on ``plan`` over ``examples`` as ``cfg`` says; returns a :class:`TrainResult`.

    ``teacher`` (online KD/GKD) or ``teacher_cache`` (a :class:`~spectrumkd.train.teacher_cache.
    TeacherCache`, off-policy KD) supplies the targets; neither for ``loss.mode=sft``. With
    ``run_dir`` set, ``metrics.jsonl`` and ``checkpoints/`` are written there, and ``resume``
    continues from ``checkpoints/last``. ``on_step(row)`` is called after every optimizer step
    with the step's metrics (tests use it to interrupt a run). A fresh run refuses a ``run_dir``
    that already holds checkpoints.
    """
    mode = cfg.loss.mode
    if mode != "sft" and teacher is None and teacher_cache is None:
        raise SpectrumKDError(f"loss.mode={mode} needs a teacher or a teacher cache")
    if mode == "gkd" and teacher is None:
        raise SpectrumKDError("loss.mode=gkd needs the teacher in memory (on-policy samples are new)")
    accelerator = accelerator or make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    index = plan_index(plan, [ex.id for ex in examples])  # errors name plan ids not in the data
    collate = Collator(tokenizer.pad_token_id)
    vocab = len(tokenizer)
    run_dir = Path(run_dir) if run_dir is not None else None

    if cfg.optim.gradient_checkpointing:
        student.gradient_checkpointing_enable()
        student.config.use_cache = False
    student.train()
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        teacher.to(accelerator.device)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    per_step = step_size(cfg, world)
    steps_per_epoch = plan_steps(plan, per_step)
    scheduler = _scheduler(cfg, optimizer, sum(steps_per_epoch))
    model, optimizer = accelerator.prepare(student, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    state = TrainState()
    rd = RunDir(run_dir) if run_dir is not None else None
    is_main = accelerator.is_main_process
    if resume:
        found = rd.latest_checkpoint() if rd is not None else None
        if found is None:
            raise SpectrumKDError(f"--resume: no complete checkpoint in {rd.checkpoints if rd else None}")
        state = load_checkpoint(found, model=unwrapped, optimizer=optimizer, scheduler=scheduler, rank=rank)
        if is_main:
            rd.repair_links()  # a kill may have come between a commit and the links
            print(f"resuming from {found} (epoch {state.epoch}, {state.step_in_epoch} steps into it, "
                  f"global step {state.global_step})", flush=True)
    elif rd is not None and (rd.has_checkpoint() or rd.checkpoints.exists()):
        raise SpectrumKDError(f"{rd.checkpoints} exists: resume the run or use another run directory")
    if rd is not None and is_main:
        rd.truncate_metrics(global_step=state.global_step, epoch=state.epoch)
    accelerator.wait_for_everyone()
    result = TrainResult(state=state)
    metrics = MetricsWriter(
        run_dir / "metrics.jsonl" if (run_dir is not None and is_main) else None,
        tensorboard_dir=run_dir / "tensorboard" if (run_dir is not None and is_main and cfg.tensorboard) else None,
    )
    bar = progress_bar(sum(steps_per_epoch), initial=state.global_step, disable=not (cfg.progress and is_main))
    loss_kwargs = {
        "divergence": cfg.loss.divergence, "ce_weight": cfg.loss.ce_weight, "skew": cfg.loss.skew,
        "teacher_weight": cfg.loss.teacher_weight,
    }  # fmt: skip

    saving = {"best": False}  # a best save cut short by Ctrl-C: the interrupt save is the best

    def save(*, best: bool = False) -> None:
        saving["best"] = best
        state.generation += 1
        if best:
            state.best_generation = state.generation
        save_checkpoint(
            run_dir, model=unwrapped, optimizer=optimizer, scheduler=scheduler, state=state, plan=plan,
            tokenizer=tokenizer, merge=cfg.lora.enabled and cfg.lora.merge_on_save, rank=rank,
            is_main=is_main,
        )  # fmt: skip
        saving["best"] = False

    def micro_loss(batch: dict, ids: list, tau: float, num_tokens: int):
        input_ids = batch["input_ids"].to(accelerator.device)
        attention_mask = batch["attention_mask"].to(accelerator.device)
        # Shifted labels with -100 appended, aligned with the *unsliced* logits [B, L, V]: the same
        # loss (the last position predicts nothing), and no [tokens × vocab] copy of a [:, :-1] view.
        labels = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
        labels = labels.to(accelerator.device)  # [B, L]
        with accelerator.autocast():
            s_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            if mode == "sft":
                return kd_loss(s_logits[..., :vocab], None, labels, divergence="none", ce_weight=1.0,
                               num_tokens=num_tokens, chunk_size=cfg.loss.chunk_size)
            if teacher_cache is not None:
                t_ids, t_logprobs = teacher_cache.batch(ids, labels)  # [B, L, k] each
                return sparse_kd_loss(s_logits[..., :vocab], t_ids, t_logprobs, labels,
                                      temperature=tau, num_tokens=num_tokens, **loss_kwargs)
            with torch.no_grad():
                t_logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits
            s_logits, t_logits = shared_vocab_logits(s_logits, t_logits, vocab)
            # The chunked path (analytic gradients, cache-sized chunks) unless a chunk size is set:
            # same value and gradients as dense autograd, ~2× faster and far less memory.
            return kd_loss(s_logits, t_logits, labels, temperature=tau, num_tokens=num_tokens,
                           chunk_size=cfg.loss.chunk_size or default_chunk_size(vocab), **loss_kwargs)

    consistent = True
    try:
        for epoch in range(state.epoch, plan.num_epochs + 1):
            ep = plan.epoch(epoch)
            tau = ep.temperature
            order = epoch_order(plan, epoch, index, seed=cfg.seed)
            result.epoch_ids[epoch] = [examples[i].id for i in order]
            # A resumed epoch carries on its loss sum; its step count is the steps already done.
            epoch_start, epoch_steps = time.perf_counter(), state.step_in_epoch
            for step_i in range(steps_per_epoch[epoch - 1]):
                if step_i < state.step_in_epoch:
                    continue  # resumed: these steps are done (the order is deterministic)
                t0 = time.perf_counter()
                chunk = order[step_i * per_step : (step_i + 1) * per_step]
                shares = _micro_batches(chunk, cfg.optim.batch_size * world, rank, world)
                micro = [[examples[i] for i in share] for share in shares]
                on_policy = mode == "gkd" and use_student_samples(cfg.seed, state.global_step, cfg.loss.gkd_lambda)
                if on_policy:
                    micro = [
                        sample_responses(
                            unwrapped, exs, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            max_new_tokens=cfg.loss.gkd_max_new_tokens,
                            seed=(cfg.seed * 1_000_003 + state.global_step * 1009 + rank * 31 + a) % 2**31,
                        ) if exs else exs
                        for a, exs in enumerate(micro)
                    ]  # fmt: skip
                # Dummy stand-in for an empty share (the step's first example, weight 0).
                batches = [collate(exs if exs else [examples[chunk[0]]]) for exs in micro]
                local = sum(int((b["labels"][:, 1:] != -100).sum()) for b, exs in zip(batches, micro) if exs)
                num_tokens = int(accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum"))
                sums = torch.zeros(3, device=accelerator.device)  # total, ce, kd (global-normalised)
                for a, (batch, exs) in enumerate(zip(batches, micro)):
                    sync = a == len(batches) - 1
                    ctx = accelerator.no_sync(model) if not sync else nullcontext()
                    with ctx:
                        try:
                            out = micro_loss(batch, [ex.id for ex in exs] or [examples[chunk[0]].id], tau, num_tokens)
                        except torch.OutOfMemoryError as exc:
                            raise SpectrumKDError(OOM_HINT.format(what=f"epoch {epoch}, step {step_i + 1}")) from exc
                        weight = float(world) if exs else 0.0
                        accelerator.backward(out.total * weight)
                    if exs:
                        sums += torch.stack([out.total.detach().float(), out.ce.float(), out.kd.float()])
                sums = accelerator.reduce(sums, "sum")
                grad_norm = None
                if cfg.optim.grad_clip is not None:
                    grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.grad_clip)
                loss = float(sums[0])
                consistent = False  # until the counters say this step is done (Ctrl-C save)
                optimizer.step()
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step_in_epoch += 1
                state.global_step += 1
                state.epoch_loss_sum += loss
                consistent = True
                result.losses.append(loss)
                epoch_steps += 1
                dt = time.perf_counter() - t0
                row = {
                    "step": state.global_step, "epoch": epoch, "loss": loss, "ce": float(sums[1]),
                    "kd": float(sums[2]), "temperature": tau, "lr": lr, "tokens": num_tokens,
                    "tokens_per_s": num_tokens / dt if dt > 0 else None,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "on_policy": on_policy,
                }  # fmt: skip
                if state.global_step % cfg.log_every == 0:
                    metrics.step(**row)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", tau=f"{tau:.2f}")
                every = cfg.save_every_steps
                last_step = step_i + 1 == steps_per_epoch[epoch - 1]
                if rd is not None and every and state.global_step % every == 0 and not last_step:
                    save()  # mid-epoch generation (the epoch end saves anyway)
                if on_step is not None:
                    on_step(row)

            summary = {"epoch": epoch, "subset_size": len(ep.ids), "temperature": tau,
                       "steps": epoch_steps, "epoch_loss": state.epoch_loss_sum / max(epoch_steps, 1)}
            if validation_examples:
                if is_main:
                    from spectrumkd.train.validation import validate

                    summary.update(validate(
                        unwrapped, tokenizer, validation_examples, teacher=teacher, temperature=tau,
                        loss_kwargs=loss_kwargs if mode != "sft" else None,
                        max_new_tokens=cfg.validation.max_new_tokens,
                        batch_size=cfg.validation.batch_size,
                    ))  # fmt: skip
                accelerator.wait_for_everyone()
                result.validation[epoch] = {k: v for k, v in summary.items() if k.startswith("val_")}
            summary["epoch_time_s"] = time.perf_counter() - epoch_start
            improved = False
            score = summary.get("val_rougeL")
            if score is not None and (state.best_score is None or score > state.best_score):
                state.best_score, state.best_epoch, improved = score, epoch, True
            metrics.epoch(**summary, best_epoch=state.best_epoch)
            consistent = False
            state.epoch, state.step_in_epoch, state.epoch_loss_sum = epoch + 1, 0, 0.0
            state.finished = epoch == plan.num_epochs
            consistent = True
            if rd is not None:
                save(best=improved or (not validation_examples and state.finished))
    except KeyboardInterrupt:
        if rd is not None and consistent:
            save(best=saving["best"])
            if is_main:
                print(f"\ninterrupted: resumable state saved to {rd.latest_checkpoint()} "
                      f"(epoch {state.epoch}, step {state.step_in_epoch}); rerun with --resume")
        elif rd is not None and is_main:
            print(f"\ninterrupted mid-update; the last complete checkpoint is {rd.latest_checkpoint()}")
        raise
    finally:
        bar.close()
        metrics.close()
    result.state = state
    return result

