"""The metric panel: numbers that can tell students apart at CPU scale, where ROUGE-L cannot.

A small student's samples can be word salad whose ROUGE-L only measures accidental overlap; the
panel adds teacher-forced and generation-quality measures, each a mean over rows of the row's
per-token mean (nats/token):

==================  ==========================================================  ==========
key                 what                                                        better
==================  ==========================================================  ==========
``heldout_ce``      −log q(y_t | x, y_<t) on the reference answers (response     lower
                    tokens + EOS), the scoring metric ``ce``
``heldout_kl``      KL(p_teacher ‖ q) over the full vocabulary at τ = 1, at the    lower
                    same positions
``entropy``         H(q(· | x, y_<t)) at the same positions                       near the teacher's
``sample_nll``      −log p_teacher(ŷ_t | x, ŷ_<t) of the model's *sampled* answers  lower
                    ŷ (T = 1, top-k 0, top-p 1, the instruct suite's samples, EOS
                    included when the sample ended with it), mean over samples
``rougeL``          MiniLLM's sampled ROUGE-L (the suite's number)                higher
``rougeL_greedy``   ROUGE-L of greedy answers to the same prompts                 higher
==================  ==========================================================  ==========

Reference rows are built by :func:`spectrumkd.data.build_examples` (the prompt as rendered by the
set, its first reference as the response, EOS appended, rows whose prompt exceeds
``max_prompt_length`` = 256 or whose total exceeds ``max_length`` = 512 tokens skipped and
counted). Teacher log-probabilities come from :mod:`spectrumkd.evaluate.teacher_logprobs` (one
teacher pass per teacher and rows, cached on disk); the statistics from
:mod:`spectrumkd.evaluate.forced`. For the teacher evaluated as a model, ``sample_nll`` is its
NLL of its own samples and ``heldout_kl`` ≈ 0 (float16 storage: ~1e-4).

:func:`heldout` and :func:`sample_nll` are plain functions of models and examples (training curves
use :func:`heldout` too); :func:`eval_panel` is what ``spectrumkd eval --teacher`` runs per
instruction set, resumable (greedy answers in ``generations/{set}/greedy.jsonl``, the finished
panel in ``generations/{set}/panel.json``, reused while its header matches).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator, Example, build_examples
from spectrumkd.evaluate.forced import IGNORE_INDEX, row_sums
from spectrumkd.evaluate.results import BETTER, PANEL_METRICS, TEACHER_METRICS
from spectrumkd.evaluate.teacher_logprobs import TeacherLogprobs

__all__ = ["BETTER", "PANEL_METRICS", "TEACHER_METRICS", "eval_panel", "heldout",
           "reference_examples", "sample_examples", "sample_nll"]

MAX_PROMPT_LENGTH, MAX_LENGTH = 256, 512  # MiniLLM's, as the instruct protocol's
# Rows per teacher-forced batch of eval_panel: logits of about rows × 512 × V float32 each
# (SmolLM2: ~400 MB at 4 rows), whatever the generation batch size.
FORCED_ROWS = 4
PANEL_FILE = "panel.json"


def reference_examples(items: Sequence, tokenizer, *, max_prompt_length: int = MAX_PROMPT_LENGTH,
                       max_length: int = MAX_LENGTH) -> tuple[list[Example], list[dict]]:
    """``(examples, skipped)``: each evaluation item's prompt with its first reference as the
    response (EOS appended), by the project's one rule (:func:`~spectrumkd.data.build_examples`,
    template ``raw``); ``skipped`` lists the rows over the length limits, with the reason."""
    records = [{"id": item.id, "instruction": "", "prompt": item.prompt, "output": item.references[0]}
               for item in items]
    return build_examples(records, tokenizer, template="raw", max_prompt_length=max_prompt_length,
                          max_length=max_length)


@torch.no_grad()
def _row_means(model, examples: Sequence[Example], *, stats: tuple[str, ...], pad_id: int,
               teacher: TeacherLogprobs | None, batch_size: int) -> dict[str, list[float]]:
    """Each example's mean of each statistic over its response tokens, in order."""
    if not examples:
        raise SpectrumKDError("no rows to evaluate the panel on")
    collate = Collator(pad_id)
    device = next(model.parameters()).device
    means: dict[str, list[float]] = {name: [] for name in stats}
    means["tokens"] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            chunk = list(examples[start : start + batch_size])
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            targets = teacher.batch(chunk) if teacher is not None else None
            sums = row_sums(model, batch, stats=stats, teacher_logprobs=targets)
            counts = sums["count"].to(torch.float64)
            for name in stats:
                means[name] += (sums[name] / counts).tolist()
            means["tokens"] += sums["count"].tolist()
    finally:
        model.train(was_training)
    return means


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def heldout(model, examples: Sequence[Example], *, pad_id: int,
            teacher: TeacherLogprobs | None = None, batch_size: int = FORCED_ROWS) -> dict:
    """``{"heldout_ce", "entropy", "heldout_kl" (with ``teacher``), "rows", "tokens"}`` of
    ``model`` teacher-forced on ``examples``: means over rows of each row's per-token mean.

    ``teacher`` holds the teacher's log-probabilities on exactly these examples
    (:func:`~spectrumkd.evaluate.teacher_logprobs.teacher_logprobs`). The model's train/eval mode
    is restored afterwards.
    """
    stats = ("ce", "entropy", "kl") if teacher is not None else ("ce", "entropy")
    means = _row_means(model, examples, stats=stats, pad_id=pad_id, teacher=teacher,
                       batch_size=batch_size)
    out = {"heldout_ce": _mean(means["ce"]), "entropy": _mean(means["entropy"])}
    if teacher is not None:
        out["heldout_kl"] = _mean(means["kl"])
    out.update(rows=len(examples), tokens=int(sum(means["tokens"])))
    return out


def sample_examples(tokenizer, prompts: Sequence[str], samples: Sequence[Sequence[int]], *,
                    max_prompt_length: int | None = MAX_PROMPT_LENGTH) -> tuple[list[Example], int]:
    """``(examples, n_empty)``: each prompt (encoded and cut as generation does) followed by its
    sampled token ids as the response; samples without a token are left out and counted."""
    from spectrumkd.evaluate.generation import encode_prompts

    prompt_ids, _ = encode_prompts(tokenizer, prompts, max_prompt_length=max_prompt_length)
    examples, empty = [], 0
    for i, (ids, tokens) in enumerate(zip(prompt_ids, samples, strict=True)):
        if not tokens:
            empty += 1
            continue
        examples.append(Example(id=i, prompt=prompts[i], response=None, input_ids=ids + list(tokens),
                                labels=[IGNORE_INDEX] * len(ids) + list(tokens)))
    return examples, empty


def sample_nll(teacher, examples: Sequence[Example], *, pad_id: int, batch_size: int = FORCED_ROWS) -> float:
    """The teacher's mean per-token NLL (T = 1) of sampled answers (:func:`sample_examples`),
    averaged over samples: the response CE of :func:`heldout` with the teacher as the model."""
    means = _row_means(teacher, examples, stats=("ce",), pad_id=pad_id, teacher=None,
                       batch_size=batch_size)
    return _mean(means["ce"])


# ----------------------------------------------------------------------------- spectrumkd eval


def _sampled_tokens(out_dir: Path, files: Sequence[str], n: int) -> list[list[int]]:
    """Token ids of the first ``n`` rows of each seed file, seed after seed."""
    from spectrumkd.evaluate.results import read_rows_only

    found = []
    for rel in files:
        rows = read_rows_only(out_dir / rel)[:n]
        for index, row in enumerate(rows, start=1):
            if not isinstance(row.get("tokens"), list):
                raise SpectrumKDError(f"{out_dir / rel}: row {index} has no sampled token ids "
                                      "(written before the metric panel); delete the file")
            found.append(row["tokens"])
    return found


def eval_panel(
    eval_set, entry: dict, *, out_dir: Path, model, tokenizer, settings, header_base: dict,
    teacher: tuple | None, batch_size: int, rows: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The panel of one instruction set whose sampled seeds are done (``entry`` from
    :func:`spectrumkd.evaluate.suites.run_instruct`).

    ``teacher`` is ``(model, fingerprint, name)`` or None (then ``heldout_kl`` and
    ``sample_nll`` are absent, and ``absent`` says why). ``rows`` limits the teacher-forced and
    sample rows to the set's first ``rows`` items (default all). ``settings`` are the sampled
    protocol's decoding settings; greedy answers use them with ``do_sample=False``, generated
    ``batch_size`` prompts at a time (teacher-forced passes: :data:`FORCED_ROWS` rows).
    """
    from spectrumkd.evaluate import suites
    from spectrumkd.evaluate.generation import eos_ids
    from spectrumkd.evaluate.results import generations_header
    from spectrumkd.fileio import atomic_write_text, read_json

    items = eval_set.items[:rows] if rows is not None else eval_set.items
    folder = Path(out_dir) / "generations" / eval_set.name
    key = {"spectrumkd": "panel", "model_fingerprint": header_base["model_fingerprint"],
           "teacher_fingerprint": teacher[1] if teacher else None,
           "data_fingerprint": eval_set.fingerprint, "rows": len(items),
           "settings": header_base["settings"], "files": entry["files"]}
    path = folder / PANEL_FILE
    if path.is_file():
        done = read_json(path, what="panel file")
        if {k: done.get(k) for k in key} == key:
            if log:
                log(f"{path}: complete, reused")
            return done["panel"]
    greedy = replace(settings, do_sample=False)
    rel = Path("generations") / eval_set.name / "greedy.jsonl"
    header = {**header_base, "settings": {**header_base["settings"], "decoding": greedy.to_dict()},
              "set": eval_set.name, "seed": None, "data_fingerprint": eval_set.fingerprint}
    greedy_rows = suites.run_job(
        Path(out_dir) / rel, generations_header(**header), eval_set.items,
        suites.model_batches(model, tokenizer, [i.prompt for i in eval_set.items], settings=greedy,
                             seed=0, batch_size=batch_size),
        suites.score_instruct, log=log)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids(model, tokenizer)[0]
    refs, skipped = reference_examples(items, tokenizer,
                                       max_prompt_length=settings.max_prompt_length or MAX_PROMPT_LENGTH,
                                       max_length=settings.max_length or MAX_LENGTH)
    cached = None
    if teacher is not None:
        from spectrumkd.evaluate.teacher_logprobs import teacher_logprobs

        cached = teacher_logprobs(teacher[0], refs, pad_id=pad_id, vocab_size=len(tokenizer),
                                  batch_size=FORCED_ROWS, log=log)
    forced = heldout(model, refs, pad_id=pad_id, teacher=cached, batch_size=FORCED_ROWS)
    panel = {"heldout_ce": forced["heldout_ce"], "entropy": forced["entropy"]}
    if teacher is not None:
        tokens = _sampled_tokens(Path(out_dir), entry["files"], len(items))
        prompts = [item.prompt for item in items] * len(entry["files"])
        samples, empty = sample_examples(tokenizer, prompts, tokens,
                                         max_prompt_length=settings.max_prompt_length)
        panel["heldout_kl"] = forced["heldout_kl"]
        panel["sample_nll"] = sample_nll(teacher[0], samples, pad_id=pad_id, batch_size=FORCED_ROWS)
        counts = {"n_samples": len(samples), "n_empty_samples": empty, "teacher": teacher[2]}
    else:
        counts = {"absent": {k: "no teacher given (--teacher)" for k in TEACHER_METRICS}}
    panel["rougeL"] = entry["rougeL"]
    panel["rougeL_greedy"] = sum(r["score"] for r in greedy_rows) / len(greedy_rows)
    panel.update(n_rows=len(refs), n_skipped=len(skipped), tokens=forced["tokens"],
                 max_prompt_length=settings.max_prompt_length, max_length=settings.max_length,
                 greedy_file=str(rel), **counts)
    atomic_write_text(path, json.dumps({**key, "panel": panel}, indent=2) + "\n")
    return panel
