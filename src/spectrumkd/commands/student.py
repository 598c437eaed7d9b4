"""``spectrumkd student --teacher SPEC --out DIR``: a pruned, healed student and its card.

The options are the fields of :class:`spectrumkd.train.student.StudentConfig` (their docstrings
are the help texts); the build itself is :func:`spectrumkd.train.student.build_student`.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from spectrumkd.commands.options import field_docs

HELP = ("Make a student from a teacher: drop the least important block of decoder layers "
        "(measured on calibration text), heal it with a short KD run, write DIR/student.json.")


def _parse_type(annotation: str):
    if "int" in annotation:
        return int
    if "float" in annotation:
        return float
    return str


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spectrumkd.train.student import StudentConfig

    docs = field_docs(StudentConfig)
    for f in fields(StudentConfig):
        default = f.default if f.default is not MISSING else None
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default,
                       type=_parse_type(str(f.type)),
                       help=f"{docs.get(f.name, '')} (default: {default})".strip())
    p.add_argument("--out", required=True, help="the student folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-cache", action="store_true", help="rebuild even when a cached build exists")


def run(args: argparse.Namespace) -> int:
    import json

    from spectrumkd.train.student import CARD, StudentConfig, build_student

    cfg = StudentConfig(**{f.name: getattr(args, f.name) for f in fields(StudentConfig)})
    out = build_student(cfg, args.out, overwrite=args.overwrite, use_cache=not args.no_cache)
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    ce = card["ce"]
    healed = f"{ce['healed']:.2f}" if ce["healed"] is not None else "not healed"
    print(f"kept layers {card['kept_layers']} ({card['num_layers']['student']} of "
          f"{card['num_layers']['teacher']}); calibration CE teacher {ce['teacher']:.2f}, "
          f"pruned {ce['pruned']:.2f}, healed {healed} nats/token")
    print(f"wrote {out}")
    return 0
