"""The scoring runner: bucketed batches, inference mode, progress, one or many processes, the file.

``score_examples`` scores a list of :class:`~spectrumkd.data.Example` and returns the scores in
dataset order. Batches are made once for all processes (``batching.py``); under ``torchrun`` or
``accelerate launch`` (an initialised ``torch.distributed`` group) batch ``b`` runs on process
``b % world_size`` and each round of batches is gathered to every process, so 1 and N processes
compute exactly the same batches and the same numbers. ``run_scoring`` adds the scores file: the
main process appends each round (flushed), resumes a partial file, reuses a complete one whose
header matches, and rewrites the finished file in dataset order. NaN/inf scores raise an error
naming the ids before anything of that round is written.

What it does not do: choose the device or dtype (``models.py``) or build examples (``data``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator, Example, dataset_fingerprint
from spectrumkd.models import model_fingerprint
from spectrumkd.scoring.batching import make_batches
from spectrumkd.scoring.metrics import METRICS, REDUCTIONS, batch_scores
from spectrumkd.scoring.scores_file import (
    ScoresWriter,
    header_mismatch,
    make_header,
    read_partial,
    write_complete,
)


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_gather(obj):
    rank, world = dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _broadcast(obj):
    _, world = dist_info()
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _pad_id(model, tokenizer) -> int:
    for source in (tokenizer, getattr(model, "config", None)):
        pad = getattr(source, "pad_token_id", None)
        if pad is not None:
            return int(pad)
    eos = getattr(model.config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, list) else eos
    return 0 if eos is None else int(eos)  # padding ids are masked, any valid id works


def _rougel_scores(model, tokenizer, examples: Sequence[Example], max_new_tokens: int) -> list[float]:
    from spectrumkd.evaluate.generation import generate
    from spectrumkd.evaluate.rouge import rouge_l

    if tokenizer is None:
        raise SpectrumKDError("metric 'rougel' needs the tokenizer (to generate greedy answers)")
    answers = generate(
        model,
        tokenizer,
        [ex.prompt for ex in examples],
        do_sample=False,
        max_new_tokens=max_new_tokens,
        batch_size=len(examples),
        seed=0,
        max_length=None,
        max_prompt_length=None,
    )
    scores = []
    for ex, answer in zip(examples, answers, strict=True):
        refs = ex.references or ([ex.response] if ex.response else [])
        if not refs:
            raise SpectrumKDError(f"example {ex.id!r} has no reference for the rougel metric")
        scores.append(1.0 - rouge_l(prediction=answer, references=refs) / 100.0)
    return scores


def _check_scorable(examples: Sequence[Example], metric: str, reduction: str) -> None:
    if metric not in METRICS:
        raise SpectrumKDError(f"unknown metric {metric!r}; use one of {METRICS}")
    if reduction not in REDUCTIONS:
        raise SpectrumKDError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")
    empty = [ex.id for ex in examples if ex.num_response_tokens == 0 and metric != "rougel"]
    if empty:
        raise SpectrumKDError(f"examples without response tokens cannot be scored: {empty[:10]}")


def _score_batch(model, tokenizer, chunk: list, collate, metric: str, reduction: str,
                 max_new_tokens: int) -> list[float]:
    """This process's scores of one batch (empty when it has none this round)."""
    if not chunk:
        return []
    if metric == "rougel":
        return _rougel_scores(model, tokenizer, chunk, max_new_tokens)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(chunk).items()}
    return batch_scores(model, batch, metric=metric, reduction=reduction).tolist()


def _gather_new(examples, mine: list[int], scores: list[float], known: Mapping,
                metric: str) -> list[tuple[int, float]]:
    """Every process's new ``(index, score)`` pairs of this round; non-finite scores are an error."""
    gathered = [(i, s) for part in _all_gather(list(zip(mine, scores))) for i, s in part
                if examples[i].id not in known]
    bad = [examples[i].id for i, s in gathered if not math.isfinite(s)]
    if bad:
        raise SpectrumKDError(
            f"non-finite {metric} scores (NaN/inf) for ids {bad[:20]}; nothing of this "
            "batch was written. Try --dtype float32 or check the model weights."
        )
    return gathered


def score_examples(
    model,
    examples: Sequence[Example],
    *,
    metric: str = "ce",
    reduction: str = "mean",
    batch_tokens: int = 4096,
    bucket: bool = True,
    tokenizer=None,
    max_new_tokens: int = 256,
    progress: bool = True,
    on_batch: Callable[[list, list[float]], None] | None = None,
    known: Mapping | None = None,
) -> list[float]:
    """Per-example difficulty scores of ``examples``, in their order (see the module docstring).

    ``batch_tokens`` bounds rows × longest length of each batch; ``bucket=False`` batches in dataset
    order (the benchmark's baseline). ``on_batch(ids, scores)`` is called on every process after
    each round with the newly finished examples. ``known`` maps ids to scores already computed (a
    resumed file): batches are formed over all examples as in the first run, batches whole known are
    skipped, and the others are recomputed whole so every new score comes from the same batch as
    in an uninterrupted run. The model runs in eval and inference mode, its dtype and device as they are.

    >>> from spectrumkd.models import tiny_random_model
    >>> ex = [Example(i, "", "", [], [5, 6, 7][: i + 2], [-100, 6, 7][: i + 2]) for i in range(2)]
    >>> len(score_examples(tiny_random_model(layers=1, hidden=32), ex, progress=False))
    2
    """
    _check_scorable(examples, metric, reduction)
    if not examples:
        return []
    rank, world = dist_info()
    lengths = [len(ex) for ex in examples]
    known = dict(known or {})
    batches = [
        b for b in make_batches(lengths, batch_tokens, bucket=bucket)
        if not all(examples[i].id in known for i in b)
    ]
    collate = Collator(_pad_id(model, tokenizer))
    results: list[float | None] = [known.get(ex.id) for ex in examples]
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(r is None for r in results), unit="ex", desc=f"scoring ({metric})",
               disable=not progress or rank != 0, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    start, n_tokens = time.perf_counter(), 0
    try:
        with torch.inference_mode():
            for first in range(0, len(batches), world):
                mine = batches[first + rank] if first + rank < len(batches) else []
                scores = _score_batch(model, tokenizer, [examples[i] for i in mine], collate,
                                      metric, reduction, max_new_tokens)
                gathered = _gather_new(examples, mine, scores, known, metric)
                for i, s in gathered:
                    results[i] = s
                if on_batch is not None and gathered:
                    on_batch([examples[i].id for i, _ in gathered], [s for _, s in gathered])
                n_tokens += sum(lengths[i] for i, _ in gathered)
                bar.update(len(gathered))
                bar.set_postfix_str(f"{n_tokens / max(time.perf_counter() - start, 1e-9):.0f} tok/s")
    finally:
        bar.close()
        model.train(was_training)
    missing = [examples[i].id for i, s in enumerate(results) if s is None]
    if missing:  # a bug, not bad input: every example is in exactly one batch
        raise RuntimeError(f"examples left unscored: {missing[:10]}")
    return results  # type: ignore[return-value]


def run_scoring(
    model,
    examples: Sequence[Example],
    out: str | Path,
    *,
    model_name: str,
    template: str,
    max_length: int,
    max_prompt_length: int,
    metric: str = "ce",
    reduction: str = "mean",
    batch_tokens: int = 4096,
    overwrite: bool = False,
    tokenizer=None,
    max_new_tokens: int = 256,
    progress: bool = True,
    bucket: bool = True,
) -> list[float]:
    """Score ``examples`` into the scores file ``out`` (docs/design.md §4); returns scores in dataset order.

    A complete file with a matching header is reused without running the model; a partial one is
    resumed; a file from another model, dataset, template, length limit, metric or reduction is an
    error unless ``overwrite``. Under many processes only the main process writes.
    """
    out = Path(out)
    rank, _ = dist_info()
    extra = {"max_new_tokens": max_new_tokens} if metric == "rougel" else {}
    header = make_header(
        metric=metric,
        reduction=reduction,
        model=model_name,
        model_fingerprint=model_fingerprint(model),
        dataset_fingerprint=dataset_fingerprint(examples),
        template=template,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        n_examples=len(examples),
        **extra,
    )
    decision = _decide(out, header, examples, overwrite) if rank == 0 else None
    decision = _broadcast(decision)
    if decision[0] == "error":
        raise SpectrumKDError(decision[1])
    kind, done, file_header = decision
    if kind == "reuse":
        return [float(done[ex.id]) for ex in examples]
    writer = None
    if rank == 0:
        if kind == "fresh":
            writer = ScoresWriter(out, header)
        elif kind == "repair":  # a torn last line: rewrite the whole lines, then append
            writer = ScoresWriter(out, file_header, keep=done)
        else:
            writer = ScoresWriter(out, None)
    try:
        scores = score_examples(
            model,
            examples,
            metric=metric,
            reduction=reduction,
            batch_tokens=batch_tokens,
            bucket=bucket,
            tokenizer=tokenizer,
            max_new_tokens=max_new_tokens,
            progress=progress,
            on_batch=writer.append if writer is not None else None,
            known=done,
        )
    finally:
        if writer is not None:
            writer.close()
    scores = [float(s) for s in scores]
    if rank == 0:
        write_complete(out, file_header, [ex.id for ex in examples], scores)
    if dist_info()[1] > 1:
        torch.distributed.barrier()
    return scores


def _decide(out: Path, header: dict, examples: Sequence[Example], overwrite: bool) -> tuple:
    """What to do with an existing file: ``fresh`` / ``resume`` / ``repair`` / ``reuse`` / ``error``."""
    if not out.exists() or overwrite:
        return ("fresh", {}, header)
    try:
        old, done, torn = read_partial(out)
    except SpectrumKDError as exc:
        return ("error", f"{exc}; pass --overwrite to replace it")
    if old is None:
        return ("error", f"{out} exists but has no spectrumkd scores header; pass --overwrite")
    diff = header_mismatch(old, header)
    if diff:
        return (
            "error",
            f"{out} holds scores of another run ({'; '.join(diff)}); "
            "pass --overwrite to replace it or choose another --out",
        )
    ids = {ex.id for ex in examples}
    stray = [rid for rid in done if rid not in ids]
    if stray:
        return ("error", f"{out} holds ids not in the data: {stray[:10]}; pass --overwrite")
    bad = [rid for rid, s in done.items() if not isinstance(s, (int, float)) or not math.isfinite(s)]
    if bad:
        return ("error", f"{out} holds non-numeric or non-finite scores for ids {bad[:10]}")
    if len(done) == len(ids) and not torn:
        return ("reuse", done, old)
    return ("repair" if torn else "resume", done, old)
