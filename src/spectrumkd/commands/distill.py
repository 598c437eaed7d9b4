"""``spectrumkd distill``: score, plan and distil a student as a YAML config says (docs/design.md §7).

``spectrumkd distill --config FILE [--output-dir DIR] [--resume | --overwrite] [section.key=value ...]``
writes the run directory: config.yaml, dropped.jsonl, scores.jsonl, plan.json, metrics.jsonl,
checkpoints/. Scoring and planning run here when the run directory lacks them (a matching scores
file is reused, a user's plan.json is used). A directory holding another run is refused unless
``--resume`` or ``--overwrite`` is given; the check comes before anything is written
(:mod:`spectrumkd.train.pipeline`).
torch is imported only inside :func:`run`. Multi-process: ``accelerate launch -m spectrumkd.cli
distill ...`` (or ``torchrun``).
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "Distil a student from a teacher with a curriculum plan (scores and plans it first if needed)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (see configs/smoke.yaml)")
    p.add_argument("--output-dir", help="run directory (overrides output_dir in the config)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in the output directory (same config) from its newest "
                      "complete checkpoint")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run in the output directory (removes what distill wrote "
                      "there; a user's plan.json stays)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted config overrides, e.g. loss.divergence=rkl optim.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.rundir import RunDir
    from spectrumkd.train.config import load_config
    from spectrumkd.train.pipeline import distill

    cfg = load_config(args.config, list(args.overrides))
    if args.output_dir is not None:  # replace() re-runs the checks: "" is refused
        cfg = dataclasses.replace(cfg, output_dir=args.output_dir)
    result = distill(cfg, resume=args.resume, overwrite=args.overwrite)
    state = result.state
    best = ""
    if state.best_score is not None:
        best = f", best val ROUGE-L {state.best_score:.2f} at epoch {state.best_epoch}"
    print(f"distilled {state.global_step} steps over {state.epoch - 1} epochs into {cfg.output_dir}{best}")
    model = RunDir(cfg.output_dir).best_model_dir
    if model is not None:
        print(f"best model: {model}")
    return 0
