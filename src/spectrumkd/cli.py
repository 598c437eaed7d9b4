"""The ``spectrumkd`` command line: a plain dict from subcommand name to its (imported) module.

Each module in :mod:`spectrumkd.commands` defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` and imports torch/transformers only inside ``run``, so ``spectrumkd --help``
and ``spectrumkd plan`` never import torch. Errors the user can fix (:class:`SpectrumKDError`)
print one clear line and exit with status 2, and so does a missing optional dependency (naming
the extra that installs it); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from types import ModuleType

from spectrumkd import SpectrumKDError, __version__
from spectrumkd.commands import (
    compare,
    demo,
    distill,
    experiment,
    judge,
    plan,
    report,
    score,
    student,
)
from spectrumkd.commands import eval as eval_command

COMMANDS: dict[str, ModuleType] = {
    "plan": plan,
    "score": score,
    "student": student,
    "distill": distill,
    "eval": eval_command,
    "judge": judge,
    "compare": compare,
    "report": report,
    "experiment": experiment,
    "demo": demo,
}


# The optional dependencies a command may need, by top-level module name → the extra that
# installs it (pyproject.toml's [project.optional-dependencies]): a missing one is a one-line error.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "transformers", "accelerate", "peft", "gguf", "datasets", "tqdm",
                     "tokenizers", "safetensors"), "train"),
    "rouge_score": "eval",
    "matplotlib": "plot",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional dependency, or None for any other module.

    >>> missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))[:33]
    'torch is not installed: it is in '
    """
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return (f"{module} is not installed: it is in the '{extra}' extra; install it with "
            f"pip install -e \".[{extra}]\" (from a clone) or pip install \"spectrumkd[{extra}]\"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectrumkd",
        description="Difficulty-spectrum curriculum for white-box knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"spectrumkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
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
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"spectrumkd {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"spectrumkd {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spectrumkd {args.command}: interrupted", file=sys.stderr)
        return 130


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError``: the files it names, the system's reason, and a hint for a
    full disk (files are replaced atomically: a failed write leaves the previous one).

    >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "run/plan.json"))
    'run/plan.json: No space left on device (free some space and rerun)'
    """
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename is not None:
        if os.path.isfile(exc.filename):  # mkdir of an --out that is a file
            reason = "is a file, where a folder is needed"
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    line = f"{' -> '.join(names)}: {reason}" if names else reason
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        line += " (free some space and rerun)"
    return line


if __name__ == "__main__":
    sys.exit(main())
