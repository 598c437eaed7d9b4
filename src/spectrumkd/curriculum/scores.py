"""Read a difficulty-scores file (docs/design.md §4) into ids and a float64 array.

The format is JSON Lines: an optional header object ``{"spectrumkd": "scores", "metric": ...}``
followed by one ``{"id": ..., "score": float}`` per example. Ids keep their JSON type (string or
integer). Every problem is reported with the file and line number; NaN/inf scores and duplicate ids
are collected and reported together so one run of the command shows all of them.

Writing scores is the job of :mod:`spectrumkd.scoring`; this module only reads, so that the pure
curriculum and ``spectrumkd plan`` work without torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.jsonl import iter_jsonl

__all__ = ["ScoresFile", "read_scores", "score_row", "validate_scores"]


@dataclass(frozen=True)
class ScoresFile:
    """Scores in file order. ``header`` is None when the file has no header line."""

    header: dict | None
    ids: list
    scores: np.ndarray


def _preview(items: list, limit: int = 10) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def validate_scores(ids: list, scores, *, source: str = "scores") -> np.ndarray:
    """Check ids and scores for use by the curriculum; return the scores as float64.

    Raises :class:`SpectrumKDError` naming the offending ids for NaN/inf scores, duplicate ids,
    ids that are neither strings nor integers, mismatched lengths and fewer than two examples.

    >>> validate_scores(["a", "b"], [0.5, 1.5]).tolist()
    [0.5, 1.5]
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or len(arr) != len(ids):
        raise SpectrumKDError(f"{source}: {len(ids)} ids but {arr.size} scores")
    if len(ids) < 2:
        raise SpectrumKDError(
            f"{source}: {len(ids)} scored example(s); a spectrum needs at least 2"
        )
    if not set(map(type, ids)) <= {str, int}:  # C-speed check; list the culprits only on failure
        bad_type = [i for i in ids if type(i) not in (str, int)]
        raise SpectrumKDError(f"{source}: ids must be strings or integers: {_preview(bad_type)}")
    not_finite = ~np.isfinite(arr)
    if not_finite.any():
        bad = [ids[i] for i in np.flatnonzero(not_finite)]
        raise SpectrumKDError(f"{source}: non-finite (NaN/inf) scores for ids {_preview(bad)}")
    # Window difficulties are sums of up to N scores: each must stay below max/N to stay finite.
    limit = np.finfo(np.float64).max / len(arr)
    huge = np.abs(arr) > limit
    if huge.any():
        bad = [ids[i] for i in np.flatnonzero(huge)]
        raise SpectrumKDError(
            f"{source}: scores too large to sum (|score| > {limit:.3g} for {len(arr)} examples) "
            f"for ids {_preview(bad)}"
        )
    if len(set(ids)) != len(ids):
        dups = [i for i, c in Counter(ids).items() if c > 1]
        raise SpectrumKDError(f"{source}: duplicate ids {_preview(dups)}")
    return arr


def score_row(obj: dict, path: Path, lineno: int, *, finite: bool = False) -> tuple:
    """``(id, score)`` of one row ``{"id": ..., "score": number}``, or a one-line error naming
    the file and line: a missing field, a score that is not a number (``true`` is not 1.0), and
    with ``finite`` a NaN or infinite score.

    >>> score_row({"id": "a", "score": True}, Path("s.jsonl"), 3)
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: s.jsonl:3: score must be a number, got True (id 'a')
    """
    if "id" not in obj or "score" not in obj:
        missing = [k for k in ("id", "score") if k not in obj]
        raise SpectrumKDError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
    score = obj["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise SpectrumKDError(f"{path}:{lineno}: score must be a number, got {score!r:.40} "
                              f"(id {obj['id']!r:.40})")
    if finite and not np.isfinite(score):
        raise SpectrumKDError(f"{path}:{lineno}: score {score} is not finite (id {obj['id']!r:.40})")
    return obj["id"], float(score)


def read_scores(path: str | Path) -> ScoresFile:
    """Read a scores JSON Lines file; the header line is optional.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "s.jsonl")
    >>> _ = open(p, "w").write('{"spectrumkd": "scores", "metric": "ce"}\\n'
    ...                        '{"id": "a", "score": 2.0}\\n{"id": 7, "score": 1.0}\\n')
    >>> f = read_scores(p)
    >>> f.header["metric"], f.ids, f.scores.tolist()
    ('ce', ['a', 7], [2.0, 1.0])
    """
    path = Path(path)
    if not path.is_file():
        raise SpectrumKDError(f"{path}: scores file not found")
    header: dict | None = None
    ids: list = []
    scores: list[float] = []
    for lineno, obj in iter_jsonl(path):
        if "spectrumkd" in obj:
            if obj["spectrumkd"] != "scores":
                raise SpectrumKDError(
                    f"{path}:{lineno}: this is a {obj['spectrumkd']!r} file, not scores"
                )
            if header is not None or ids:
                raise SpectrumKDError(f"{path}:{lineno}: header line must be the first line")
            header = obj
            continue
        rid, score = score_row(obj, path, lineno)
        ids.append(rid)
        scores.append(score)
    if not ids:
        raise SpectrumKDError(f"{path}: no scores (empty file or header only)")
    arr = validate_scores(ids, scores, source=str(path))
    return ScoresFile(header=header, ids=ids, scores=arr)
