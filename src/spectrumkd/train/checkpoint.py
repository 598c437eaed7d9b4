"""Checkpoints that resume exactly: weights, optimizer, scheduler, RNG states, position, plan.

A checkpoint folder (``checkpoints/last`` or ``checkpoints/best``) holds

- ``trainable.safetensors``: every trainable parameter (all weights for full fine-tuning, the
  LoRA adapter weights otherwise), the resume source of truth;
- ``state.pt``: optimizer and scheduler state, :class:`TrainState` (epoch, step, best score);
- ``rng-<rank>.pt``: Python, numpy and torch (CPU and CUDA) RNG states of each process;
- ``plan.json``: the plan the run follows;
- ``model/``: ``save_pretrained`` of the student (the adapter under LoRA) and the tokenizer, for
  people who only want the model (:func:`export_model`; ``merged/`` beside it under LoRA).

Folders are written to ``<name>.tmp`` and renamed, so an interrupted save never leaves a
half-written ``last``. Position semantics: ``TrainState`` records optimizer steps *completed*;
resuming replays the epoch's deterministic order from the next step, so the losses equal an
uninterrupted run. This module does not decide when to save (:mod:`spectrumkd.train.loop` does).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spectrumkd import SpectrumKDError

__all__ = ["TrainState", "export_model", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state"]


@dataclass
class TrainState:
    """Where training stands: ``epoch`` (1-based) is the epoch in progress, ``step_in_epoch``
    the optimizer steps of it already done, ``global_step`` all optimizer steps done."""

    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    finished: bool = False


def rng_state() -> dict:
    """Every RNG the loop touches (dropout, sampling): Python, numpy, torch CPU and CUDA."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() lists a tied weight once, so safetensors never sees shared storage.
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def export_model(model: torch.nn.Module, folder: Path, *, tokenizer=None, merge: bool = False) -> None:
    """``save_pretrained`` the (unwrapped) student into ``folder``; under LoRA also ``merged/``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if merge and hasattr(model, "merge_and_unload"):
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder.parent / "merged")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder.parent / "merged")


def save_checkpoint(
    folder: str | Path,
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
    """Write a resumable checkpoint to ``folder`` (atomically replaced). ``model`` is unwrapped.

    Every process calls it: each writes its own RNG file, the main process the rest.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(_trainable(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "train_state": asdict(state)},
            tmp / "state.pt",
        )
        if plan is not None:
            plan.save(tmp / "plan.json")
        if export:
            export_model(model, tmp / "model", tokenizer=tokenizer, merge=merge)
    _barrier()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    _barrier()
    if is_main:
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    _barrier()
    return folder


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
    """Restore weights (in place), optimizer, scheduler and this process's RNG; return the state."""
    folder = Path(folder)
    if not (folder / "state.pt").is_file() or not (folder / "trainable.safetensors").is_file():
        raise SpectrumKDError(f"{folder}: not a spectrumkd checkpoint (state.pt or trainable.safetensors missing)")
    saved = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        missing = sorted(expected - set(saved))[:5]
        extra = sorted(set(saved) - expected)[:5]
        raise SpectrumKDError(
            f"{folder}: checkpoint does not fit this model (missing {missing}, unexpected {extra}); "
            "was it written with another student or LoRA setting?"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    blob = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(blob["scheduler"])
    rng_file = folder / f"rng-{rank}.pt"
    if restore_rng and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return TrainState(**blob["train_state"])
