"""Read JSON Lines files with errors that name the file and line (stdlib only, no torch).

Scores, metrics, evaluation sets and generations files are all JSON Lines; this is their one
reader. Blank lines are skipped; ``.gz`` files are read transparently. Writing stays with each
format's owner, since each has its own flushing and atomic-replace rules.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from spectrumkd import SpectrumKDError

__all__ = ["iter_jsonl"]


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(1-based line number, object)`` for each non-blank line; every line must be an object.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> list(iter_jsonl(p))
    [(1, {'a': 1}), (3, {'a': 2})]
    >>> _ = p.write_text('{"a": 1}\\n[2]\\n')
    >>> list(iter_jsonl(p))
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: ...x.jsonl:2: expected a JSON object, got [2]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        handle = opener(path, "rt", encoding="utf-8")
    except FileNotFoundError:
        raise SpectrumKDError(f"{path}: no such file") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpectrumKDError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise SpectrumKDError(f"{path}:{lineno}: expected a JSON object, got {obj!r:.60}")
            yield lineno, obj
