"""``spectrumkd experiment --config FILE --out DIR [--shard I/N | --no-run] [key=value ...]``.

The experiment itself is :func:`spectrumkd.experiment.run_experiment`; overrides are dotted
(``experiment.seeds=[0]``, ``run.curriculum.epochs=3``). Rerunning continues where it stopped:
every unit with a record in ``DIR/records/`` is kept. ``--shard I/N`` runs a deterministic share
of the grid (one per GPU or node; docs/scaling.md); ``--no-run`` only rebuilds the tables from
the records present (after copying the shards' records together).
"""

from __future__ import annotations

import argparse

HELP = ("Run named arms (curriculum kinds or config overrides) × training seeds at equal step "
        "budgets, evaluate each with the MiniLLM protocol, record each run, and write "
        "DIR/results.json and DIR/study.json with paired-seed statistics.")


def _shard(text: str) -> tuple[int, int]:
    from spectrumkd import SpectrumKDError
    from spectrumkd.evaluate.study import parse_shard

    try:
        return parse_shard(text)
    except SpectrumKDError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (sections experiment and run)")
    p.add_argument("--out", required=True, help="experiment directory (reruns resume it)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--shard", type=_shard, metavar="I/N",
                       help="run only the I-th of N deterministic shares of the arm × seed grid "
                            "(0 <= I < N, e.g. a job array's task id), skipping recorded units")
    group.add_argument("--no-run", action="store_true",
                       help="train and evaluate nothing: rebuild results and study.json from the "
                            "records in DIR (e.g. after copying the shards' records/ together)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. experiment.seeds=[0,1] run.optim.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.experiment import render_markdown, run_experiment

    results = run_experiment(args.config, args.out, args.overrides, shard=args.shard,
                             run=not args.no_run)
    print(render_markdown(results), end="")
    suffix = "" if results["checkpoint"] == "best" else f"-{results['checkpoint']}"
    print(f"wrote {args.out}/results{suffix}.json and {args.out}/study{suffix}.json")
    return 0
