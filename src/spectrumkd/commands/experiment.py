"""``spectrumkd experiment --config FILE --out DIR [key=value ...]``: arms × seeds, paired tests.

The experiment itself is :func:`spectrumkd.experiment.run_experiment`; overrides are dotted
(``experiment.seeds=[0]``, ``run.curriculum.epochs=3``). Rerunning continues where it stopped.
"""

from __future__ import annotations

import argparse

HELP = ("Run named arms (curriculum kinds or config overrides) × training seeds at equal step "
        "budgets, evaluate each with the MiniLLM protocol, write DIR/results.json with Wilcoxon p.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (sections experiment and run)")
    p.add_argument("--out", required=True, help="experiment directory (reruns resume it)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. experiment.seeds=[0,1] run.optim.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.experiment import render_markdown, run_experiment

    results = run_experiment(args.config, args.out, args.overrides)
    print(render_markdown(results), end="")
    suffix = "" if results["checkpoint"] == "best" else f"-{results['checkpoint']}"
    print(f"wrote {args.out}/results{suffix}.json")
    return 0
