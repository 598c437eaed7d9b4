"""The teacher's full next-token log-probabilities on reference rows, computed once and cached.

The metric panel's KL(teacher‖student) needs the teacher's whole distribution at every response
position of the held-out rows, for every model evaluated against it (each arm, each seed, each
point of a training curve, while the teacher itself is often not in memory). One teacher pass
writes them to disk; later readers memory-map them.

On disk (a folder, written to a fresh ``<folder>.tmp-*`` and renamed when complete, so processes that
build the same cache at once, e.g. two experiment shards on one machine, never share a
half-written folder; the first rename wins and the others drop their copy)::

    index.json     {"spectrumkd": "teacher_logprobs", "format", "teacher_fingerprint",
                    "dataset_fingerprint", "vocab_size", "dtype", "n_tokens", "created",
                    "examples": [[id, offset, n_tokens], ...]}
    logprobs.npy   float16 [n_tokens, vocab_size]   log p_teacher(v | x, y_<t) at τ = 1

Rows are the response positions of each example in order (shifted labels ≠ -100), over the shared
vocabulary (the tokenizer length; LM-head padding rows are dropped). Cost: 2·V bytes per response
token — 96 KiB at SmolLM2's V = 49,152, so 40 DollyEval rows (~4,000 tokens) take ~400 MB.
float16 keeps log-probabilities to ~2⁻¹¹ relative (absolute 0.016 at −30, where p < 10⁻¹³); readers
renormalise with a float32 ``log_softmax``, and the KL this gives differs from the float32 one by
~1e-4 nats/token (tested against a float64 reference).

The folder name is a hash of the fingerprint (format, teacher :func:`~spectrumkd.models.
model_fingerprint`, :func:`~spectrumkd.data.dataset_fingerprint` of the rows — ids, token ids and
labels, so template, tokenizer and length limits —, vocabulary size, dtype) under
``cache_dir()/teacher_logprobs/``. :func:`teacher_logprobs` reuses a folder whose ``index.json``
says exactly that fingerprint and rebuilds any other (an older format, a torn write), saying so;
:meth:`TeacherLogprobs.open` refuses a mismatch with a one-line error. Never silently used.

Not here: the statistics computed against these (:mod:`spectrumkd.evaluate.forced`), the top-k
training cache (:mod:`spectrumkd.train.teacher_cache`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.fileio import read_json

__all__ = ["FORMAT", "TeacherLogprobs", "logprobs_fingerprint", "teacher_logprobs"]

FORMAT = 1
KIND = "teacher_logprobs"
_INDEX = "index.json"
_ARRAY = "logprobs.npy"
_FINGERPRINT_KEYS = ("format", "teacher_fingerprint", "dataset_fingerprint", "vocab_size", "dtype")


def logprobs_fingerprint(teacher, examples: Sequence, vocab_size: int) -> dict:
    """What a cache of ``teacher`` on ``examples`` must say it is (the keys of its folder hash)."""
    from spectrumkd.data import dataset_fingerprint
    from spectrumkd.models import model_fingerprint

    return {"format": FORMAT, "teacher_fingerprint": model_fingerprint(teacher),
            "dataset_fingerprint": dataset_fingerprint(examples), "vocab_size": int(vocab_size),
            "dtype": "float16"}


def _folder_name(fingerprint: dict) -> str:
    payload = json.dumps({k: fingerprint[k] for k in _FINGERPRINT_KEYS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _mismatch(folder: Path, fingerprint: dict) -> str | None:
    """Why ``folder`` is not a complete cache for ``fingerprint`` (None when it is)."""
    index = folder / _INDEX
    if not index.is_file():
        return f"{index} is missing"
    header = read_json(index, what="teacher log-prob index")
    if header.get("spectrumkd") != KIND:
        return f"{index} is not a teacher log-prob index"
    diffs = [k for k in _FINGERPRINT_KEYS if header.get(k) != fingerprint.get(k)]
    if diffs:
        return f"{index} was written for another teacher or rows ({', '.join(diffs)} differ)"
    array = folder / _ARRAY
    if not array.is_file():
        return f"{array} is missing"
    shape = np.load(array, mmap_mode="r").shape
    if shape != (header.get("n_tokens"), header.get("vocab_size")):
        return f"{array} has shape {shape}, {_INDEX} says {header.get('n_tokens')} × {header.get('vocab_size')}"
    return None


class TeacherLogprobs:
    """A complete cache, memory-mapped; :meth:`batch` gives the rows of a batch of examples."""

    def __init__(self, folder: Path, header: dict) -> None:
        self.folder = folder
        self.header = header
        self.vocab_size = int(header["vocab_size"])
        self._logprobs = np.load(folder / _ARRAY, mmap_mode="r")  # [n_tokens, V] float16
        self._where = {str(ex_id): (int(off), int(n)) for ex_id, off, n in header["examples"]}

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict) -> TeacherLogprobs:
        """Open ``folder``; a one-line error unless it is a complete cache for ``fingerprint``."""
        folder = Path(folder)
        reason = _mismatch(folder, fingerprint)
        if reason is not None:
            raise SpectrumKDError(f"{reason}; delete {folder} to have it rebuilt")
        return cls(folder, read_json(folder / _INDEX, what="teacher log-prob index"))

    @property
    def bytes_per_token(self) -> int:
        return self.vocab_size * self._logprobs.dtype.itemsize

    def batch(self, examples: Sequence) -> torch.Tensor:
        """``[N, V]`` float32 log-probs of the examples' N response positions, row-major (example
        by example), renormalised over V in float32."""
        parts = []
        for ex in examples:
            where = self._where.get(str(ex.id))
            if where is None:
                raise SpectrumKDError(f"{self.folder}: example {ex.id!r} is not in the teacher log-probs")
            off, n = where
            count = sum(1 for label in ex.labels[1:] if label != -100)
            if count != n:
                raise SpectrumKDError(f"{self.folder}: example {ex.id!r} has {count} response tokens, "
                                      f"the cache holds {n}")
            parts.append(np.asarray(self._logprobs[off : off + n], dtype=np.float32))
        return torch.log_softmax(torch.from_numpy(np.concatenate(parts)), dim=-1)


def teacher_logprobs(
    teacher,
    examples: Sequence,
    *,
    pad_id: int,
    vocab_size: int,
    root: str | Path | None = None,
    batch_size: int = 4,
    log: Callable[[str], None] | None = None,
) -> TeacherLogprobs:
    """The cache of ``teacher`` on ``examples`` under ``root`` (default ``cache_dir()/teacher_logprobs``):
    reused when its fingerprint matches, else written (or rewritten, saying why)."""
    from spectrumkd.models import cache_dir

    fingerprint = logprobs_fingerprint(teacher, examples, vocab_size)
    root = Path(root) if root is not None else cache_dir() / KIND
    folder = root / _folder_name(fingerprint)
    reason = _mismatch(folder, fingerprint)
    if reason is None:
        return TeacherLogprobs.open(folder, fingerprint)
    if folder.exists() and log is not None:
        log(f"teacher log-probs: rebuilding {folder}: {reason}")
    _write(folder, teacher, examples, fingerprint, pad_id=pad_id, batch_size=batch_size)
    if log is not None:
        n = read_json(folder / _INDEX, what="teacher log-prob index")["n_tokens"]
        log(f"teacher log-probs: {n} response tokens of {len(examples)} rows → {folder} "
            f"({n * 2 * vocab_size / 2**20:.0f} MiB)")
    return TeacherLogprobs.open(folder, fingerprint)


@torch.no_grad()
def _write(folder: Path, teacher, examples: Sequence, fingerprint: dict, *, pad_id: int,
           batch_size: int) -> None:
    from spectrumkd.data import Collator
    from spectrumkd.evaluate.forced import response_logits

    vocab = fingerprint["vocab_size"]
    counts = [sum(1 for label in ex.labels[1:] if label != -100) for ex in examples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.tmp-"))
    out = np.lib.format.open_memmap(tmp / _ARRAY, mode="w+", dtype=np.float16,
                                    shape=(int(offsets[-1]), vocab))
    collate = Collator(pad_id)
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    try:
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(list(examples[start : start + batch_size])).items()}
            logits, targets = response_logits(teacher, batch)  # [B, K, V'], [B, K]
            chosen = logits[targets != -100][:, :vocab]  # [N, V] row-major
            out[offsets[start] : offsets[start] + chosen.shape[0]] = (
                torch.log_softmax(chosen, dim=-1).cpu().numpy().astype(np.float16))
    finally:
        teacher.train(was_training)
    out.flush()
    del out
    header = {"spectrumkd": KIND, **fingerprint, "n_tokens": int(offsets[-1]),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "examples": [[str(ex.id), int(offsets[i]), counts[i]] for i, ex in enumerate(examples)]}
    (tmp / _INDEX).write_text(json.dumps(header), encoding="utf-8")
    if folder.exists() and _mismatch(folder, fingerprint) is not None:
        shutil.rmtree(folder)  # an older format or a torn write: replaced
    try:
        tmp.rename(folder)
    except OSError:  # another process renamed its copy first
        if _mismatch(folder, fingerprint) is not None:
            raise
        shutil.rmtree(tmp)
