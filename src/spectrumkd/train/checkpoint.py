"""Checkpoints that resume exactly and load no pickles: weights, optimizer, RNG, position, plan.

A checkpoint is one *generation* of the run directory (:mod:`spectrumkd.rundir`,
``checkpoints/gen-N``; ``checkpoints/last`` and ``checkpoints/best`` are links to generations).
It holds

- ``trainable.safetensors``: every trainable parameter (all weights for full fine-tuning, the
  LoRA adapter weights otherwise), the resume source of truth;
- ``state.pt``: optimizer and scheduler state dicts, written with ``torch.save`` and read back
  with ``torch.load(weights_only=True)`` (tensors and plain containers only; no code runs);
  a student sharded by FSDP2 is gathered to whole tensors first (:func:`_full_state`), so its
  checkpoint resumes under any process count, sharded or not;
- ``train_state.json``: :class:`TrainState` (epoch, step, generation, best generation, ...);
- ``rng-<rank>.json`` (Python and numpy RNG states as plain numbers) and
  ``rng-<rank>.safetensors`` (torch CPU and CUDA generator states as uint8 tensors);
- ``plan.json``: the plan the run follows;
- ``model/``: ``save_pretrained`` of the student (the adapter under LoRA) and the tokenizer, for
  people who only want the model (``merged/`` beside it under LoRA);
- ``COMMITTED``: written last (:func:`spectrumkd.rundir.commit_generation`).

Write order: ``gen-N.tmp`` → every file → fsync → marker → rename to ``gen-N`` → move ``last``
(and ``best``) → remove older generations. :func:`_stage` is called after each step; the kill
tests replace it to die there. Position semantics: ``TrainState`` records optimizer steps
*completed*; resuming replays the epoch's deterministic order from the next step, so the losses
equal an uninterrupted run, also from a mid-epoch checkpoint (``save_every_steps``).
This module does not decide when to save (:mod:`spectrumkd.train.loop` does).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spectrumkd import SpectrumKDError
from spectrumkd.fileio import read_json
from spectrumkd.rundir import STATE_FILE, RunDir, begin_generation, commit_generation

__all__ = ["TrainState", "export_model", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state"]


@dataclass
class TrainState:
    """Where training stands: ``epoch`` (1-based) is the epoch in progress, ``step_in_epoch``
    the optimizer steps of it already done, ``global_step`` all optimizer steps done.

    ``generation`` is the checkpoint generation this state was saved as; ``best_generation`` the
    one holding the best model so far; ``epoch_loss_sum`` the sum of this epoch's step losses
    (so the epoch line of a resumed epoch is the uninterrupted one)."""

    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    finished: bool = False
    generation: int = 0
    best_generation: int | None = None
    epoch_loss_sum: float = 0.0

    @classmethod
    def from_dict(cls, data: dict, *, source: str) -> TrainState:
        """The state in ``data``, checked: every field of its type and range, and the counters
        consistent with each other (an edited file is refused, never trusted)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpectrumKDError(f"{source}: unknown train-state fields {unknown}")
        for name, value in data.items():
            kind = _STATE_TYPES[name]
            ok = (value is None and name in _OPTIONAL) or (
                isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)))
            if ok and isinstance(value, float) and not math.isfinite(value):
                ok = False
            if ok and kind is int and value is not None and value < (1 if name == "epoch" else 0):
                ok = False
            if not ok:
                raise SpectrumKDError(f"{source}: {name} = {value!r:.40} is not a valid value")
        state = cls(**{k: float(v) if _STATE_TYPES[k] == (int, float) and v is not None else v
                       for k, v in data.items()})
        problems = []
        if state.step_in_epoch > state.global_step:
            problems.append("step_in_epoch exceeds global_step")
        if state.best_generation is not None and not 1 <= state.best_generation <= state.generation:
            problems.append("best_generation is not an earlier or this generation")
        if (state.best_score is None) != (state.best_epoch is None):
            problems.append("best_score and best_epoch must be set together")
        if state.best_epoch is not None and state.best_epoch >= state.epoch:
            problems.append("best_epoch is not a finished epoch")
        if state.finished and state.step_in_epoch:
            problems.append("finished, yet steps into an epoch")
        if problems:
            raise SpectrumKDError(f"{source}: inconsistent train state ({'; '.join(problems)})")
        return state

    def check_against(self, steps_per_epoch: list[int], *, source: str) -> None:
        """Refuse a state that does not fit the plan being trained (``steps_per_epoch`` of it):
        an epoch beyond the plan's, a step beyond its epoch, ``finished`` before the end. (The
        global step is not matched exactly: another process count changes the steps per epoch.)"""
        n = len(steps_per_epoch)
        if self.epoch > n + 1:
            raise SpectrumKDError(f"{source}: epoch {self.epoch} is beyond the plan's {n} epochs")
        if self.epoch <= n and self.step_in_epoch > steps_per_epoch[self.epoch - 1]:
            raise SpectrumKDError(f"{source}: step {self.step_in_epoch} of epoch {self.epoch}, "
                                  f"which has {steps_per_epoch[self.epoch - 1]} steps")
        if self.finished != (self.epoch == n + 1):
            raise SpectrumKDError(f"{source}: finished = {self.finished} at epoch {self.epoch} of a "
                                  f"{n}-epoch plan")


_STATE_TYPES = {"epoch": int, "step_in_epoch": int, "global_step": int, "best_score": (int, float),
                "best_epoch": int, "finished": bool, "generation": int, "best_generation": int,
                "epoch_loss_sum": (int, float)}
_OPTIONAL = {"best_score", "best_epoch", "best_generation"}


def _stage(name: str) -> None:
    """Called after each step of a checkpoint write (a seam for the kill tests; does nothing)."""


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """Every RNG the loop touches, as ``(plain JSON numbers, uint8 tensors)``.

    Python's Mersenne Twister and numpy's legacy global state are lists of integers; torch's
    CPU and CUDA generator states are uint8 tensors (for safetensors).
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    plain = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return plain, tensors


def set_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> None:
    py = plain["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
    npy = plain["numpy"]
    np.random.set_state((str(npy["name"]), np.asarray(npy["keys"], dtype=np.uint32),
                         int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")),
                                       key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied weight once, so safetensors never sees shared storage.
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def _sharded(model: torch.nn.Module) -> bool:
    """True when the student's parameters are DTensors: sharded by FSDP2 (``fully_shard``, which
    accelerate's FSDP v2 uses)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _full_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def _full_state(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """``(trainable weights, optimizer state)`` as whole CPU tensors.

    A sharded student's are gathered with ``torch.distributed.checkpoint.state_dict`` (a
    collective: every process calls this; rank 0 gets the full tensors, the others empty dicts),
    and its optimizer state is keyed by parameter names instead of positions: ``state.pt`` says
    which (``"optimizer_keys": "names"``), and :func:`load_checkpoint` reads either kind, into a
    sharded or a plain student (a plain student's state has no such key).
    """
    if not _sharded(model):
        return _trainable(model), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    names = {n for n, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    weights = {n: t.contiguous() for n, t in full.items() if n in names}
    return weights, get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def export_model(model: torch.nn.Module, folder: Path, *, tokenizer=None, merge: bool = False) -> None:
    """``save_pretrained`` the (unwrapped) student into ``folder``; under LoRA also ``merged/``."""
    from spectrumkd.models.load import quiet_save_bars

    folder.mkdir(parents=True, exist_ok=True)
    with quiet_save_bars():
        model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if merge and hasattr(model, "merge_and_unload"):
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        with quiet_save_bars():
            merged.save_pretrained(folder.parent / "merged")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder.parent / "merged")


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: TrainState,
    plan=None,
    tokenizer=None,
    export: bool = True,
    merge: bool = False,
    rank: int = 0,
    is_main: bool = True,
) -> Path:
    """Write ``state`` as generation ``state.generation`` of ``run_dir`` and move the links.

    ``model`` is unwrapped. Every process calls it: each writes its own RNG files, the main
    process the rest. ``state.best_generation`` must already say where the best model is (this
    generation when it is the new best). Returns the generation folder.
    """
    rd = RunDir(run_dir)
    tmp = rd.checkpoints / (f"gen-{state.generation:06d}.tmp")
    sharded = _sharded(model)
    if sharded or is_main:  # gathering a sharded student takes every process
        weights, optim_state = _full_state(model, optimizer)
    if is_main:
        tmp = begin_generation(rd.checkpoints, state.generation, stage=_stage)
        save_file(weights, str(tmp / "trainable.safetensors"))
        _stage("weights")
        blob = {"optimizer": optim_state, "scheduler": scheduler.state_dict()}
        if sharded:
            blob["optimizer_keys"] = "names"  # else positions, as Optimizer.state_dict() has them
        torch.save(blob, tmp / "state.pt")
        del weights, optim_state, blob
        _stage("optimizer")
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1) + "\n", encoding="utf-8")
        _stage("state")
        if plan is not None:
            plan.save(tmp / "plan.json")
            _stage("plan")
        if export:
            export_model(model, tmp / "model", tokenizer=tokenizer, merge=merge)
            _stage("export")
    _barrier()
    plain, tensors = rng_state()
    (tmp / f"rng-{rank}.json").write_text(json.dumps(plain), encoding="utf-8")
    save_file(tensors, str(tmp / f"rng-{rank}.safetensors"))
    _stage("rng")
    _barrier()
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if is_main:
        final = commit_generation(tmp, stage=_stage)
        rd.repair_links(stage=_stage)
    _barrier()
    return final


def _barrier() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def load_checkpoint(
    folder: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    rank: int = 0,
    restore_rng: bool = True,
) -> TrainState:
    """Restore weights (in place), optimizer, scheduler and this process's RNG; return the state.

    Nothing here unpickles arbitrary objects: safetensors, JSON, and ``torch.load`` with
    ``weights_only=True`` (a tampered ``state.pt`` is refused, not run).
    """
    folder = Path(folder)
    needed = ("trainable.safetensors", "state.pt", STATE_FILE)
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise SpectrumKDError(f"{folder}: not a spectrumkd checkpoint ({', '.join(missing)} missing)")
    state = TrainState.from_dict(read_json(folder / STATE_FILE, what="train state"),
                                 source=str(folder / STATE_FILE))
    number = _generation_number(folder)
    if number is not None and state.generation != number:
        raise SpectrumKDError(f"{folder / STATE_FILE}: generation {state.generation} is not the "
                              f"folder's ({folder.name})")
    saved = _read_tensors(folder / "trainable.safetensors")
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        missing = sorted(expected - set(saved))[:5]
        extra = sorted(set(saved) - expected)[:5]
        raise SpectrumKDError(
            f"{folder}: checkpoint does not fit this model (missing {missing}, unexpected {extra}); "
            "was it written with another student or LoRA setting?"
        )
    _check_tensors(saved, {n: tuple(p.shape) for n, p in params.items() if n in saved},
                   folder / "trainable.safetensors")
    if _sharded(model):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        # Every process holds the whole file; each keeps its own shard. strict=False: buffers and
        # the second name of a tied weight are not in a checkpoint of trainable parameters.
        set_model_state_dict(model, saved, options=_full_options(strict=False))
    else:
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor)
    try:
        blob = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe unpickler refuses anything but tensors and containers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpectrumKDError(
            f"{folder / 'state.pt'}: refused to load (not plain optimizer state: {first[:160]})"
        ) from None
    try:
        _check_optimizer_blob(blob)
        if optimizer is not None and blob.get("optimizer_keys") == "names":  # written sharded
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, blob["optimizer"], options=_full_options())
        elif optimizer is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SpectrumKDError(f"{folder / 'state.pt'}: not this run's optimizer and schedule "
                              f"state ({first})") from None
    if restore_rng and (folder / f"rng-{rank}.json").is_file():
        plain = read_json(folder / f"rng-{rank}.json", what="RNG state")
        tensors = _read_tensors(folder / f"rng-{rank}.safetensors")
        try:
            set_rng_state(plain, tensors)
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
            first = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise SpectrumKDError(f"{folder}/rng-{rank}.*: not a valid RNG state ({first})") from None
    return state


def _generation_number(folder: Path) -> int | None:
    """N of a ``gen-N`` folder (the link ``last`` resolves to one); None for other names."""
    name = folder.resolve().name
    return int(name[4:]) if name.startswith("gen-") and name[4:].isdigit() else None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or corrupt file is a one-line error."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SpectrumKDError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_tensors(saved: dict[str, torch.Tensor], shapes: dict[str, tuple], path: Path) -> None:
    """Every tensor of the model's shape and finite (an edited or NaN-poisoned file is refused)."""
    for name, tensor in saved.items():
        if tuple(tensor.shape) != shapes[name]:
            raise SpectrumKDError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model's is "
                                  f"{shapes[name]}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SpectrumKDError(f"{path}: {name} holds NaN or infinite values; resume from an "
                                  "earlier checkpoint or start afresh")


def _check_optimizer_blob(blob) -> None:
    """``state.pt`` holds the two state dicts, with finite tensors only."""
    if not isinstance(blob, dict) or "optimizer" not in blob or "scheduler" not in blob:
        raise ValueError("expected a dict with 'optimizer' and 'scheduler'")
    for param_state in blob["optimizer"].get("state", {}).values():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(
                    torch.isfinite(value).all()):
                raise ValueError(f"optimizer state {key!r} holds NaN or infinite values")
