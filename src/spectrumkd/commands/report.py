"""``spectrumkd report RUN_DIR [RUN_DIR ...] [--out DIR]``: report.md and PNG figures of runs."""

from __future__ import annotations

import argparse

HELP = (
    "Write report.md with figures (difficulty distribution and spectrum, curriculum, training "
    "curves) and the results table from one or more run directories; runs are overlaid."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR",
        help="run directories (scores.jsonl, plan.json, metrics.jsonl, eval/results.json, "
        "config.yaml); the first is the baseline of the results table",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="where to write report.md and the PNGs (default: RUN_DIR/report of the first run)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from spectrumkd.report import write_report

    path = write_report(args.run_dirs, args.out)
    print(f"report: {path}")
    return 0
