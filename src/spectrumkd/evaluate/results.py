"""The files ``spectrumkd eval`` writes: per-set generations (JSON Lines) and ``results.json``.

Generations file (``DIR/generations/{set}/seed{seed}.jsonl``, or ``greedy.jsonl`` / ``samples.jsonl``):
a header line ``{"spectrumkd": "generations", "protocol", "suite", "set", "seed",
"model_fingerprint", "data_fingerprint", "settings"}`` then one ``{"id", "prediction",
"score", ...}`` per example, in set order, ``score`` on the set's 0–100 scale (ROUGE-L, or
100/0 for a correct/incorrect answer or a passing/failing program). A file with fewer rows than the
set is resumed where it stopped; a header that does not match the current run is an error (use
another ``--out`` or delete the file), never silently mixed.

``results.json``::

    {"spectrumkd": "results", "protocol": "spectrumkd-eval/1", "suite": "instruct",
     "model": "...", "model_fingerprint": "...", "created": "...", "settings": {...},
     "sets": {"dolly": {"metric": "rougeL", "rougeL": 24.1, "std": 0.3, "n": 500,
                        "per_seed": {"10": 24.0, ...}, "source": "...", "data_fingerprint": "...",
                        "files": ["generations/dolly/seed10.jsonl", ...]}, ...},
     "average": 24.1}

Code sets carry ``"pass@1"`` (and ``"pass@10"``/``"pass@100"`` when there are enough samples),
math sets ``"pass@1"``; all values are percentages. An instruction set evaluated from a model
carries ``"panel"`` (:mod:`spectrumkd.evaluate.panel`): :data:`PANEL_METRICS` (those of
:data:`TEACHER_METRICS` only with a teacher; otherwise ``"absent"`` says why) and its counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path

from spectrumkd import SpectrumKDError, __version__
from spectrumkd.fileio import atomic_write_text, read_json
from spectrumkd.jsonl import iter_jsonl

PROTOCOL_VERSION = "spectrumkd-eval/1"
#: The metric panel's numbers (nats/token, ROUGE-L 0–100) and which way is better.
PANEL_METRICS = ("heldout_ce", "heldout_kl", "entropy", "sample_nll", "rougeL", "rougeL_greedy")
TEACHER_METRICS = ("heldout_kl", "sample_nll")
BETTER = {"heldout_ce": "lower", "heldout_kl": "lower", "entropy": "teacher's",
          "sample_nll": "lower", "rougeL": "higher", "rougeL_greedy": "higher"}
HEADER_KEYS = ("protocol", "suite", "set", "seed", "model_fingerprint", "data_fingerprint",
               "settings")


def generations_header(**fields) -> dict:
    """The header object of a generations file (``HEADER_KEYS`` plus the format tag)."""
    missing = [k for k in HEADER_KEYS if k not in fields and k != "protocol"]
    if missing:
        raise SpectrumKDError(f"generations header lacks {missing}")
    return {"spectrumkd": "generations", "protocol": PROTOCOL_VERSION, **fields}


def read_generations(path: str | os.PathLike, header: dict) -> list[dict]:
    """Rows already in ``path`` for a run with ``header`` ([] if the file does not exist).

    A torn last line (an interrupted write) is dropped and the file truncated after the last
    complete row. A different header raises :class:`SpectrumKDError`.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict] = []
    good_bytes = 0
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    offset = 0
    for line_no, raw in enumerate(lines, start=1):
        complete = offset + len(raw) < len(data)  # followed by a newline
        offset += len(raw) + 1
        if not raw.strip():
            if complete:
                good_bytes = offset
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, too long or too deep
            if complete:
                raise SpectrumKDError(f"{path}:{line_no}: corrupt line") from None
            break
        if not complete:  # valid JSON but no newline yet: rewrite it cleanly
            break
        if line_no == 1:
            mismatch = {
                k: (obj.get(k), header.get(k)) for k in HEADER_KEYS if obj.get(k) != header.get(k)
            }
            if obj.get("spectrumkd") != "generations" or mismatch:
                raise SpectrumKDError(
                    f"{path}: written by a different run ({mismatch or 'not a generations file'});"
                    " use another --out or delete the file"
                )
        else:
            _check_row(obj, f"{path}:{line_no}")
            rows.append(obj)
        good_bytes = offset
    if good_bytes < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    if good_bytes == 0:
        path.unlink()
    return rows


def _check_row(obj, where: str) -> None:
    """A resumed row is an object with an ``id`` and, where it has one, a finite number as its
    ``score`` (an edited ``NaN`` or ``true`` would flow into the set's metric)."""
    if not isinstance(obj, dict) or "id" not in obj:
        raise SpectrumKDError(f"{where}: not a generations row (an object with an id)")
    score = obj.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise SpectrumKDError(f"{where}: score {score!r:.40} is not a finite number; delete the "
                              "file to generate the set again")


def append_rows(path: str | os.PathLike, header: dict, rows: list[dict]) -> None:
    """Append rows (writing the header first if the file is new), flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a", encoding="utf-8") as handle:
        if new:
            handle.write(json.dumps(header, ensure_ascii=False) + "\n")
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_rows_only(path: str | os.PathLike) -> list[dict]:
    """The example rows of a generations file (header skipped), for ``compare``."""
    return [obj for line_no, obj in iter_jsonl(path)
            if not (line_no == 1 and obj.get("spectrumkd") == "generations")]


def new_results(*, suite: str, model: str, model_fingerprint: str, settings: dict) -> dict:
    """An empty results object for a run."""
    return {
        "spectrumkd": "results",
        "protocol": PROTOCOL_VERSION,
        "spectrumkd_version": __version__,
        "suite": suite,
        "model": model,
        "model_fingerprint": model_fingerprint,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "sets": {},
    }


def finish_results(results: dict) -> dict:
    """Fill ``average`` (mean of the sets' main metric) and return ``results``."""
    values = [entry[entry["metric"]] for entry in results["sets"].values()]
    results["average"] = sum(values) / len(values) if values else None
    return results


def write_results(path: str | os.PathLike, results: dict) -> None:
    """Write ``results`` as pretty JSON, atomically (a temp file then a rename)."""
    atomic_write_text(path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def read_results(path: str | os.PathLike) -> dict:
    """Read and check a ``results.json``."""
    path = Path(path)
    results = read_json(path, what="results file")  # missing, not UTF-8, not JSON: one line
    if not isinstance(results.get("sets"), dict):
        raise SpectrumKDError(f"{path}: not a spectrumkd results file (no 'sets')")
    for name, entry in results["sets"].items():
        if not isinstance(entry, dict):
            raise SpectrumKDError(f"{path}: set {name!r} is {type(entry).__name__}, not an object")
        if "metric" not in entry or not isinstance(entry["metric"], str) or entry["metric"] not in entry:
            raise SpectrumKDError(f"{path}: set {name!r} has no main metric value")
    return results


def path_fingerprint(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a model path: name, size and mtime of each file (no hashing)."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()[:16]
