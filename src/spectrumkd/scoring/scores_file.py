"""The scores file (docs/design.md §4): header, per-batch appends, resume, reuse, final rewrite.

JSON Lines: a header ``{"spectrumkd": "scores", "metric", "reduction", "model",
"model_fingerprint", "dataset_fingerprint", "template", "max_length", "max_prompt_length",
"n_examples", "created", ...}`` then one ``{"id": ..., "score": float}`` per example. While a run is
going, rows are appended in processing order and flushed per batch, so an interruption leaves a
valid partial file; a complete run rewrites the file atomically in dataset order. A file is reused
or resumed only when every header field except ``model``, ``created`` and ``version`` matches.
A torn last line (a crash mid-write) is ignored and cut off on resume. Bytes that are not UTF-8,
lines that are not JSON, rows without ``id``/``score``, and a score that is not a finite number
(``true``, NaN: an edited file) are one-line errors naming file and line.
Writers of one scores file take its lock (:func:`spectrumkd.fileio.file_lock`) for the run.

Reading for the curriculum is :func:`spectrumkd.curriculum.read_scores`; this module never writes NaN.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from pathlib import Path

from spectrumkd import SpectrumKDError, __version__
from spectrumkd.curriculum.scores import score_row
from spectrumkd.fileio import atomic_write_text
from spectrumkd.jsonl import has_torn_tail, iter_jsonl

IGNORED_KEYS = ("model", "created", "version")


def make_header(
    *,
    metric: str,
    reduction: str,
    model: str,
    model_fingerprint: str,
    dataset_fingerprint: str,
    template: str,
    max_length: int,
    max_prompt_length: int,
    n_examples: int,
    **extra,
) -> dict:
    """The header object of a scores file (``extra`` keys are stored and matched too)."""
    return {
        "spectrumkd": "scores",
        "metric": metric,
        "reduction": reduction,
        "model": model,
        "model_fingerprint": model_fingerprint,
        "dataset_fingerprint": dataset_fingerprint,
        "template": template,
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "n_examples": n_examples,
        **extra,
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def header_mismatch(old: dict, new: dict) -> list[str]:
    """The header keys (other than ``model``/``created``/``version``) whose values differ.

    >>> header_mismatch({"metric": "ce", "created": 1}, {"metric": "entropy", "created": 2})
    ["metric: 'ce' in the file, 'entropy' now"]
    """
    keys = sorted((set(old) | set(new)) - set(IGNORED_KEYS))
    return [
        f"{k}: {old.get(k)!r} in the file, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)
    ]


def read_partial(path: str | Path) -> tuple[dict | None, dict, bool]:
    """``(header, {id: score}, torn)`` of a possibly partial scores file.

    ``torn`` is True when the last line was cut off mid-write (it is then ignored).
    """
    path = Path(path)
    if path.is_dir():
        raise SpectrumKDError(f"{path}: is a directory, expected a scores file")
    torn = has_torn_tail(path)
    header: dict | None = None
    scores: dict = {}
    for lineno, obj in iter_jsonl(path, skip_torn=True):
        if lineno == 1 and obj.get("spectrumkd") == "scores":
            header = obj
            continue
        rid, score = score_row(obj, path, lineno, finite=True)
        if type(rid) not in (str, int):
            raise SpectrumKDError(f"{path}:{lineno}: id {rid!r:.40} is neither a string nor an integer")
        scores[rid] = score
    return header, scores, torn


class ScoresWriter:
    """Appends ``{"id", "score"}`` rows and flushes after each call (a Ctrl-C leaves whole lines)."""

    def __init__(self, path: str | Path, header: dict | None, *, keep: dict | None = None) -> None:
        """Start ``path`` afresh with ``header`` and the rows ``keep``, or append when ``header`` is None."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if header is not None:
            rows = "".join(_row(rid, score) for rid, score in (keep or {}).items())
            atomic_write_text(self.path, json.dumps(header) + "\n" + rows)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, ids: Sequence, scores: Sequence[float]) -> None:
        self._fh.write("".join(_row(rid, s) for rid, s in zip(ids, scores, strict=True)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _row(rid, score: float) -> str:
    if not math.isfinite(score):  # the runner reports NaN ids before writing; this is a backstop
        raise SpectrumKDError(f"refusing to write a non-finite score {score} for id {rid!r}")
    return json.dumps({"id": rid, "score": float(score)}) + "\n"


def write_complete(path: str | Path, header: dict, ids: Sequence, scores: Sequence[float]) -> Path:
    """Write the whole file in dataset order, atomically (temporary file + rename)."""
    rows = "".join(_row(rid, s) for rid, s in zip(ids, scores, strict=True))
    return atomic_write_text(path, json.dumps(header) + "\n" + rows)
