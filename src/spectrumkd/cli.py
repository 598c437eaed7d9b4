"""The ``spectrumkd`` command line: a plain dict from subcommand name to its module.

Each module in :mod:`spectrumkd.commands` defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` and imports torch/transformers only inside ``run``, so ``spectrumkd --help``
and ``spectrumkd plan`` never import torch. Errors the user can fix (:class:`SpectrumKDError`)
print one clear line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spectrumkd import SpectrumKDError, __version__

COMMANDS: dict[str, str] = {
    "plan": "spectrumkd.commands.plan",
    "distill": "spectrumkd.commands.distill",
    "score": "spectrumkd.commands.score",
    "report": "spectrumkd.commands.report",
    "eval": "spectrumkd.commands.eval",
    "compare": "spectrumkd.commands.compare",
    "judge": "spectrumkd.commands.judge",
    "demo": "spectrumkd.commands.demo",
    "student": "spectrumkd.commands.student",
    "experiment": "spectrumkd.commands.experiment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectrumkd",
        description="Difficulty-spectrum curriculum for white-box knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"spectrumkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SpectrumKDError as exc:
        print(f"spectrumkd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spectrumkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
