"""Synthetic run directories for the report tests: log-normal scores, a real plan, fake metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spectrumkd.curriculum import make_plan


def write_run(
    root: Path,
    kind: str = "spectrumkd",
    *,
    n: int = 400,
    epochs: int = 6,
    warmup: int = 1,
    seed: int = 0,
    steps_per_epoch: int = 5,
    eval_rougeL: float | None = None,
) -> Path:
    """A run directory as docs/design.md §7 describes it, from ``make_plan`` on log-normal scores."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = rng.lognormal(mean=0.9, sigma=0.35, size=n)
    ids = [f"dev-{i}" for i in range(n)]
    with open(root / "scores.jsonl", "w", encoding="utf-8") as fh:
        header = {"spectrumkd": "scores", "metric": "ce", "reduction": "mean", "model": "tiny"}
        fh.write(json.dumps(header) + "\n")
        for i, s in zip(ids, scores):
            fh.write(json.dumps({"id": i, "score": float(s)}) + "\n")
    windowed = kind in ("spectrumkd", "random-window", "curated-shuffle")
    params = {"epochs": epochs, **({"warmup": warmup} if windowed else {})}
    plan = make_plan(kind, ids, scores, **params)
    plan.save(root / "plan.json")
    (root / "config.yaml").write_text(f"curriculum:\n  kind: {kind}\n", encoding="utf-8")
    step = 0
    with open(root / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for e in plan.epochs:
            for _ in range(steps_per_epoch):
                step += 1
                ce = 3.0 * math.exp(-step / 20) + 1.2 + 0.05 * rng.standard_normal()
                kd = 1.5 * math.exp(-step / 15) + 0.3
                fh.write(json.dumps({
                    "kind": "step", "step": step, "epoch": e.epoch, "loss": 0.3 * ce + 0.7 * kd,
                    "ce": ce, "kd": kd, "lr": 1e-4, "temperature": e.temperature,
                    "tokens_per_s": 400.0,
                }) + "\n")  # fmt: skip
            fh.write(json.dumps({
                "kind": "epoch", "epoch": e.epoch, "subset_size": len(e.ids),
                "temperature": e.temperature, "val_loss": 2.5 - 0.1 * e.epoch,
                "val_rougeL": 12.0 + e.epoch,
            }) + "\n")  # fmt: skip
    if eval_rougeL is not None:
        write_eval(root / "eval", eval_rougeL, seed=seed)
    return root


def write_eval(folder: Path, mean: float, *, seed: int = 0, n: int = 30) -> Path:
    """``results.json`` of ``spectrumkd eval`` (DollyEval, one seed) and its generations file."""
    rng = np.random.default_rng(100 + seed)
    scores = np.clip(mean + 5 * rng.standard_normal(n), 0, 100)
    rel = "generations/dolly/seed10.jsonl"
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    with open(folder / rel, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"spectrumkd": "generations", "set": "dolly", "seed": 10}) + "\n")
        for i, s in enumerate(scores):
            fh.write(json.dumps({"id": f"dolly-{i}", "prediction": "...", "score": float(s)}) + "\n")
    results = {
        "spectrumkd": "results", "suite": "instruct",
        "sets": {"dolly": {"metric": "rougeL", "rougeL": float(scores.mean()), "n": n,
                           "files": [rel]}},
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder / "results.json"


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A SpectrumKD run and a full-data run on the same scores (the demo's pair)."""
    return (
        write_run(tmp_path / "spectrumkd", "spectrumkd", epochs=6, warmup=1),
        write_run(tmp_path / "full", "full", epochs=5),
    )


@pytest.fixture
def two_evaluated_runs(tmp_path: Path) -> tuple[Path, Path]:
    """The demo's pair with DollyEval results: the full-data baseline first, then SpectrumKD."""
    return (
        write_run(tmp_path / "full", "full", epochs=5, eval_rougeL=20.0),
        write_run(tmp_path / "spectrumkd", "spectrumkd", epochs=6, warmup=1, eval_rougeL=23.0),
    )


@pytest.fixture
def make_run():
    """:func:`write_run`, for tests that need runs of their own."""
    return write_run
