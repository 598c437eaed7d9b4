"""``spectrumkd student --teacher SPEC --out DIR``: a pruned, healed student and its card.

The options are the fields of :class:`spectrumkd.train.student.StudentConfig` (their docstrings
are the help texts); the build itself is :func:`spectrumkd.train.student.build_student`.
"""

from __future__ import annotations

import argparse

from spectrumkd.commands.options import add_field_options, fields_from_args

HELP = ("Make a student from a teacher: drop the least important block of decoder layers "
        "(measured on calibration text), heal it with a short KD run, write DIR/student.json.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spectrumkd.train.student import StudentConfig

    add_field_options(p, StudentConfig)
    p.add_argument("--out", required=True, help="the student folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-cache", action="store_true", help="rebuild even when a cached build exists")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.train.student import StudentConfig, build_student, read_student_card

    cfg = StudentConfig(**fields_from_args(StudentConfig, args))
    out = build_student(cfg, args.out, overwrite=args.overwrite, use_cache=not args.no_cache)
    card = read_student_card(out)
    ce = card["ce"]
    healed = f"{ce['healed']:.2f}" if ce["healed"] is not None else "not healed"
    print(f"kept layers {card['kept_layers']} ({card['num_layers']['student']} of "
          f"{card['num_layers']['teacher']}); calibration CE teacher {ce['teacher']:.2f}, "
          f"pruned {ce['pruned']:.2f}, healed {healed} nats/token")
    print(f"wrote {out}")
    return 0
