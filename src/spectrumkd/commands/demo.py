"""``spectrumkd demo``: the offline default run (see :mod:`spectrumkd.demo`)."""

from __future__ import annotations

import argparse

HELP = "Run the whole pipeline offline on SmolLM2-135M and a packaged Dolly subset, then report."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/demo.yaml", help="demo config (default configs/demo.yaml)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("overrides", nargs="*", metavar="experiment.key=value|run.section.key=value",
                   help="e.g. experiment.eval.limit=10 run.curriculum.epochs=3")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.demo import run_demo

    report = run_demo(args.config, args.out, args.overrides)
    print(f"report: {report}")
    return 0
