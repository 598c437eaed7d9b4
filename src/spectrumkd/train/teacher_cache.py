"""Teacher-logit cache: one teacher pass writes the top-k log-probabilities of every response token.

Training then runs without the teacher in memory: :meth:`TeacherCache.batch` returns the sparse
targets of a batch, aligned with its shifted labels, for ``spectrumkd.losses.sparse_kd_loss``,
which re-tempers them per epoch (the plan's τ). Log-probabilities are stored at T = 1 over the
shared vocabulary, with the log of the teacher's mass outside the top-k (the loss's tail bucket);
with k = V the cached run equals the online run (up to the stored dtype).

On disk (a folder, written to ``<folder>.tmp`` and renamed when complete)::

    index.json          {"spectrumkd": "teacher_cache", "format": 2, "k", "dtype", "vocab_size",
                         "n_tokens", <fingerprint: model, model_fingerprint, dataset_fingerprint,
                         template, max_length>, "created", "examples": [[id, offset, length], ...]}
    topk_ids.npy        int32   [n_tokens, k]   token ids, descending teacher probability
    topk_logprobs.npy   float16 [n_tokens, k]   log p_teacher(token) at T = 1 (or float32)
    tail_logprob.npy    float32 [n_tokens]      log of the teacher's mass outside the k ids, T = 1,
                                                summed from the full logits (exact, not 1 − Σ p)

Rows are the response tokens of each example in order (positions whose shifted label is not
-100). At k = 64: 64·(4 + 2) + 4 = 388 bytes per token in float16, 516 in float32 (a full bf16
distribution over SmolLM2's 49152 tokens is 96 KiB). Format 1 (no tail) is refused with a
one-line error: its targets would train the biased, tail-free objective. Reads are memory-mapped (``np.load(...,
mmap_mode="r")``), so a cache larger than RAM works. A cache is reused only when its fingerprint,
k and dtype match and it holds every example asked for; otherwise it is an error naming the
mismatch (delete the folder or point ``teacher_cache.dir`` elsewhere).

Not here: the loss (``spectrumkd.losses``) and fingerprinting the model/data (the pipeline passes
the same fingerprint fields that the scores file uses).
"""

from __future__ import annotations

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
from spectrumkd.losses import teacher_tail, topk_teacher

__all__ = ["FINGERPRINT_KEYS", "TeacherCache", "response_positions", "write_teacher_cache"]

FINGERPRINT_KEYS = ("model", "model_fingerprint", "dataset_fingerprint", "template", "max_length")
_INDEX = "index.json"
_IDS = "topk_ids.npy"
_LOGPROBS = "topk_logprobs.npy"
_TAIL = "tail_logprob.npy"
FORMAT = 2
"""The cache layout's version: 2 added the tail mass (``tail_logprob.npy``)."""
_NP_DTYPES = {"float16": np.float16, "float32": np.float32}


def _load_array(path: Path) -> np.ndarray:
    """A memory-mapped ``.npy`` (never unpickled); a missing, cut-short or foreign file is a
    one-line error."""
    if path.is_symlink() or not path.is_file():
        raise SpectrumKDError(f"{path}: missing or not a regular file (a teacher cache array)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SpectrumKDError(f"{path}: not a readable .npy array ({exc})") from None


def _check_header(header: dict, index: Path) -> None:
    """``index.json``'s fields of the right types, and its example table inside ``n_tokens``."""
    ints = ("k", "k_requested", "vocab_size", "n_tokens")
    bad = [k for k in ints if not isinstance(header.get(k), int) or isinstance(header.get(k), bool)
           or header[k] < (0 if k == "n_tokens" else 1)]
    if bad or header.get("dtype") not in _NP_DTYPES or not isinstance(header.get("examples"), list):
        what = bad or ["dtype" if header.get("dtype") not in _NP_DTYPES else "examples"]
        raise SpectrumKDError(f"{index}: invalid teacher cache index ({', '.join(what)})")
    seen = set()
    for row in header["examples"]:
        ok = isinstance(row, list) and len(row) == 3 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in row[1:])
        if not ok or not isinstance(row[0], (str, int)) or row[1] < 0 or row[2] < 0 or (
                row[1] + row[2] > header["n_tokens"]) or row[0] in seen:
            raise SpectrumKDError(f"{index}: invalid example entry {row!r:.80}")
        seen.add(row[0])


def _check_arrays(folder: Path, header: dict, ids, logprobs, tail) -> None:
    """The arrays' dtypes and width, token ids inside the vocabulary, log-probabilities not NaN
    and at most 0 (an edited or corrupt cache is refused; the pass reads it once)."""
    if ids.dtype != np.int32 or logprobs.dtype != _NP_DTYPES[header["dtype"]] or tail.dtype != np.float32:
        raise SpectrumKDError(f"{folder}: array dtypes {ids.dtype}/{logprobs.dtype}/{tail.dtype} "
                              f"are not int32/{header['dtype']}/float32")
    if ids.ndim != 2 or ids.shape[1] != header["k"]:
        raise SpectrumKDError(f"{folder}: arrays hold {ids.shape[1:]} ids per token, not k={header['k']}")
    rows = 1 << 16
    for start in range(0, ids.shape[0], rows):
        part = slice(start, start + rows)
        block_ids, block_lp, block_tail = ids[part], logprobs[part], tail[part]
        if block_ids.size and (block_ids.min() < 0 or block_ids.max() >= header["vocab_size"]):
            raise SpectrumKDError(f"{folder}: token ids outside the vocabulary (rows from {start})")
        for name, block in ((_LOGPROBS, block_lp), (_TAIL, block_tail)):
            # -inf is a token (or tail) the teacher gives no mass; rounding may pass 0 slightly
            if bool(np.isnan(block).any()) or bool((block > 1e-3).any()):
                raise SpectrumKDError(f"{folder / name}: NaN or positive log-probabilities (rows "
                                      f"from {start})")


def response_positions(labels: Sequence[int]) -> int:
    """Number of scored positions of one example: shifted labels that are not -100.

    >>> response_positions([-100, -100, 5, 6, 7])
    3
    """
    return sum(1 for x in list(labels)[1:] if x != -100)


class TeacherCache:
    """A written cache, memory-mapped. Open with :meth:`open`."""

    def __init__(self, folder: Path, header: dict, ids: np.ndarray, logprobs: np.ndarray,
                 tail: np.ndarray) -> None:
        self.folder = folder
        self.header = header
        self.k = int(header["k"])
        self.vocab_size = int(header["vocab_size"])
        self._ids = ids
        self._logprobs = logprobs
        self._tail = tail
        self._where = {ex_id: (int(off), int(n)) for ex_id, off, n in header["examples"]}

    @classmethod
    def open(cls, folder: str | Path) -> TeacherCache:
        folder = Path(folder)
        index = folder / _INDEX
        if not index.is_file():
            raise SpectrumKDError(f"{folder}: no teacher cache here ({_INDEX} is missing)")
        header = read_json(index, what="teacher cache index")
        if header.get("spectrumkd") != "teacher_cache":
            raise SpectrumKDError(f"{index}: not a spectrumkd teacher cache")
        if header.get("format") != FORMAT:
            raise SpectrumKDError(
                f"{folder}: teacher cache format {header.get('format', 1)} (this spectrumkd writes "
                f"{FORMAT}: the teacher's tail mass); delete the folder to rebuild it"
            )
        _check_header(header, index)
        ids, logprobs, tail = (_load_array(folder / name) for name in (_IDS, _LOGPROBS, _TAIL))
        if ids.shape != logprobs.shape or ids.shape[0] != header["n_tokens"] or tail.shape != ids.shape[:1]:
            raise SpectrumKDError(
                f"{folder}: array shapes {ids.shape}/{logprobs.shape}/{tail.shape} disagree with {_INDEX}"
            )
        _check_arrays(folder, header, ids, logprobs, tail)
        return cls(folder, header, ids, logprobs, tail)

    def __contains__(self, example_id) -> bool:
        return example_id in self._where

    @property
    def n_tokens(self) -> int:
        return int(self.header["n_tokens"])

    @property
    def bytes_per_token(self) -> float:
        """Bytes of the three arrays per response token."""
        return self.k * (self._ids.dtype.itemsize + self._logprobs.dtype.itemsize) + self._tail.dtype.itemsize

    def targets(self, example_id) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids [n, k] int32, logprobs [n, k], tail [n] float32)`` of one example's response tokens."""
        try:
            off, n = self._where[example_id]
        except KeyError:
            raise SpectrumKDError(f"{self.folder}: example {example_id!r} is not in the teacher cache") from None
        return self._ids[off : off + n], self._logprobs[off : off + n], self._tail[off : off + n]

    def batch(self, example_ids: Sequence, shifted_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse teacher targets aligned with ``shifted_labels`` ``[B, L]``.

        Returns ``teacher_ids`` LongTensor ``[B, L, k]``, ``teacher_logprobs`` float32 ``[B, L, k]``
        and ``teacher_tail`` float32 ``[B, L]`` (the arguments of
        :func:`spectrumkd.losses.sparse_kd_loss`); positions whose label is -100 hold id 0 and
        log-probs 0 (the loss masks them).
        """
        b, length = shifted_labels.shape
        out_ids = torch.zeros(b, length, self.k, dtype=torch.long)
        out_lp = torch.zeros(b, length, self.k, dtype=torch.float32)
        out_tail = torch.zeros(b, length, dtype=torch.float32)
        mask = shifted_labels.cpu() != -100
        for row, ex_id in enumerate(example_ids):
            ids, lp, tail = self.targets(ex_id)
            n = int(mask[row].sum())
            if n != len(ids):
                raise SpectrumKDError(
                    f"{self.folder}: example {ex_id!r} has {n} response tokens but the cache holds "
                    f"{len(ids)}; was it written with another tokenizer or template?"
                )
            out_ids[row, mask[row]] = torch.from_numpy(np.array(ids, dtype=np.int64))
            out_lp[row, mask[row]] = torch.from_numpy(np.array(lp, dtype=np.float32))
            out_tail[row, mask[row]] = torch.from_numpy(np.array(tail, dtype=np.float32))
        device = shifted_labels.device
        return out_ids.to(device), out_lp.to(device), out_tail.to(device)

    def check(self, fingerprint: dict, *, k: int, dtype: str, example_ids: Sequence) -> None:
        """Raise unless this cache was written for ``fingerprint``/``k``/``dtype`` and holds every id."""
        diffs = [key for key in FINGERPRINT_KEYS if self.header.get(key) != fingerprint.get(key)]
        if self.header["k_requested"] != k:
            diffs.append("k")
        if self.header["dtype"] != dtype:
            diffs.append("dtype")
        if diffs:
            raise SpectrumKDError(
                f"{self.folder}: teacher cache was written for another run ({', '.join(diffs)} differ); "
                "delete it or set teacher_cache.dir to another folder"
            )
        missing = [i for i in example_ids if i not in self._where]
        if missing:
            raise SpectrumKDError(f"{self.folder}: teacher cache lacks {len(missing)} example(s): {missing[:10]}")


def write_teacher_cache(
    folder: str | Path,
    teacher: torch.nn.Module,
    examples: Sequence,
    collate: Callable[[list], dict],
    *,
    vocab_size: int,
    k: int = 64,
    dtype: str = "float16",
    batch_size: int = 8,
    fingerprint: dict | None = None,
    progress: bool = False,
) -> TeacherCache:
    """Run ``teacher`` once over ``examples`` and write their top-k log-probs to ``folder``.

    ``examples`` are :class:`spectrumkd.data.Example` objects (``id``, ``input_ids``, ``labels``);
    ``collate`` is a ``spectrumkd.data.Collator``; ``vocab_size`` is the shared tokenizer length
    (logits beyond it are padding rows and are dropped, never renormalised into).
    """
    folder = Path(folder)
    k_eff = min(k, vocab_size)
    counts = [response_positions(ex.labels) for ex in examples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # A fresh temp folder: processes writing the same cache at once never share a half-written one.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.tmp-"))
    ids_mm = np.lib.format.open_memmap(tmp / _IDS, mode="w+", dtype=np.int32,
                                       shape=(int(offsets[-1]), k_eff))
    lp_mm = np.lib.format.open_memmap(tmp / _LOGPROBS, mode="w+", dtype=_NP_DTYPES[dtype],
                                      shape=(int(offsets[-1]), k_eff))
    tail_mm = np.lib.format.open_memmap(tmp / _TAIL, mode="w+", dtype=np.float32, shape=(int(offsets[-1]),))
    was_training = teacher.training
    teacher.eval()
    # Longest first in batches of similar length: less padding, and an OOM shows up at once.
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="teacher cache"):
        rows = order[start : start + batch_size]
        top_ids, top_lp, tail = _top_k(teacher, collate([examples[i] for i in rows]), vocab_size, k_eff)
        seen = 0
        for i in rows:  # the batch's response tokens come example by example, in row order
            n = counts[i]
            ids_mm[offsets[i] : offsets[i] + n] = top_ids[seen : seen + n]
            lp_mm[offsets[i] : offsets[i] + n] = top_lp[seen : seen + n]
            tail_mm[offsets[i] : offsets[i] + n] = tail[seen : seen + n]
            seen += n
    for mm in (ids_mm, lp_mm, tail_mm):
        mm.flush()
    del ids_mm, lp_mm, tail_mm, mm
    teacher.train(was_training)
    header = _header(examples, counts, offsets, k=k_eff, k_requested=k, dtype=dtype,
                     vocab_size=vocab_size, fingerprint=fingerprint)
    (tmp / _INDEX).write_text(json.dumps(header), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process renamed its copy of this cache first
        shutil.rmtree(tmp)
    return TeacherCache.open(folder)



@torch.no_grad()
def _top_k(teacher: torch.nn.Module, batch: dict, vocab_size: int, k: int):
    """``(ids, log-probs, tail)``, numpy ``[T, k]``, ``[T, k]``, ``[T]``, of the batch's T response
    tokens, row-major (:func:`spectrumkd.losses.topk_teacher` and :func:`~spectrumkd.losses.teacher_tail`)."""
    device = next(teacher.parameters()).device
    input_ids = batch["input_ids"].to(device)
    logits = teacher(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).logits
    logits = logits[:, :-1, :vocab_size].float()  # [B, L-1, V]
    mask = batch["labels"][:, 1:].to(device) != -100  # [B, L-1]
    picked = logits[mask]  # [T, V]
    top_ids, top_lp = topk_teacher(picked, k)  # [T, k]
    tail = teacher_tail(picked, top_ids)  # [T]
    return top_ids.cpu().numpy(), top_lp.cpu().numpy(), tail.cpu().numpy()


def _header(examples: Sequence, counts: list[int], offsets, *, k: int, k_requested: int,
            dtype: str, vocab_size: int, fingerprint: dict | None) -> dict:
    """``index.json``: what was cached, for which model and data, and where each example's rows are."""
    return {
        "spectrumkd": "teacher_cache",
        "format": FORMAT,
        "k": k,
        "k_requested": k_requested,
        "dtype": dtype,
        "vocab_size": vocab_size,
        "n_tokens": int(offsets[-1]),
        **{key: (fingerprint or {}).get(key) for key in FINGERPRINT_KEYS},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "examples": [[ex.id, int(offsets[i]), counts[i]] for i, ex in enumerate(examples)],
    }
