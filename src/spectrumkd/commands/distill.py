"""``spectrumkd distill``: score, plan and distil a student as a YAML config says (DESIGN §7).

``spectrumkd distill --config FILE [--output-dir DIR] [--resume] [section.key=value ...]`` writes the
run directory: config.yaml, dropped.jsonl, scores.jsonl, plan.json, metrics.jsonl, checkpoints/.
Scoring and planning run here when the run directory lacks them (a matching scores file is reused).
torch is imported only inside :func:`run`. Multi-process: ``accelerate launch -m spectrumkd.cli
distill ...`` (or ``torchrun``).
"""

from __future__ import annotations

import argparse

HELP = "Distil a student from a teacher with a curriculum plan (scores and plans it first if needed)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (see configs/smoke.yaml)")
    p.add_argument("--output-dir", help="run directory (overrides output_dir in the config)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <output-dir>/checkpoints/last with the same config")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted config overrides, e.g. loss.divergence=rkl optim.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.train.config import load_config
    from spectrumkd.train.pipeline import distill

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(args.config, overrides)
    result = distill(cfg, resume=args.resume)
    state = result.state
    best = f", best val ROUGE-L {state.best_score:.2f} at epoch {state.best_epoch}" if state.best_score is not None else ""
    print(f"distilled {state.global_step} steps over {state.epoch - 1} epochs into {cfg.output_dir}{best}")
    return 0
