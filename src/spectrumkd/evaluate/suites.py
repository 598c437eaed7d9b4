"""The ``spectrumkd eval`` runner: generate (or read completions), score, write, resume.

Three suites share one loop (:func:`run_job`): predictions for a set come batch by batch either
from a model (:func:`spectrumkd.evaluate.generation.iter_generate`) or from a completions file;
each batch is scored and appended to its generations file at once, so an interrupted run
resumes after the last complete batch (finished set/seed files are skipped).

- ``instruct``: MiniLLM's protocol on each set for each seed; ROUGE-L; mean and std over seeds.
  A model's rows keep the sampled token ids (``tokens``), which the metric panel scores under
  the teacher (:mod:`spectrumkd.evaluate.panel`).
- ``math``: greedy, the Figure 7 few-shot prompt, answer extraction, pass@1.
- ``code``: greedy, the Figure 8 prompt (or HumanEval samples ``{"task_id", "completion"}``),
  sandboxed execution, pass@1 (and unbiased pass@k with several samples per task).

Not here: the LLM judge (``judge.py``, needs an endpoint and a baseline's answers), loading
models (``spectrumkd.models``), the command-line parsing (``commands/eval.py``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate import code as code_eval
from spectrumkd.evaluate import math as math_eval
from spectrumkd.evaluate.results import append_rows, generations_header, read_generations
from spectrumkd.evaluate.rouge import rouge_l
from spectrumkd.evaluate.sets import EvalItem, EvalSet, read_rows
from spectrumkd.evaluate.stats import mean_std

# start index -> (first, predictions); a prediction is a str or a generation.Sample
Batches = Callable[[int], Iterator[tuple[int, list]]]
Scorer = Callable[[list[EvalItem], list], list[dict]]


def run_job(
    path: str | os.PathLike, header: dict, items: Sequence[EvalItem], batches: Batches,
    score: Scorer, *, log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows for every item of one set/seed: resumed from ``path``, the rest predicted and scored."""
    done = read_generations(path, header)
    for index, row in enumerate(done):
        if index >= len(items) or row.get("id") != items[index].id:
            raise SpectrumKDError(
                f"{path}: row {index + 1} has id {row.get('id')!r}, expected "
                f"{items[index].id if index < len(items) else 'no more rows'}; delete the file"
            )
    if len(done) >= len(items):
        if log:
            log(f"{path}: complete ({len(items)} rows), skipped")
        return done[: len(items)]
    if done and log:
        log(f"{path}: resuming at row {len(done) + 1} of {len(items)}")
    for first, predictions in batches(len(done)):
        batch = list(items[first: first + len(predictions)])
        rows = score(batch, predictions)
        append_rows(path, header, rows)
        done.extend(rows)
        if log:
            log(f"{path}: {len(done)}/{len(items)}")
    if len(done) != len(items):
        raise SpectrumKDError(f"{path}: got {len(done)} predictions for {len(items)} examples")
    return done


def model_batches(
    model, tokenizer, prompts: Sequence[str], *, settings, seed: int, batch_size: int,
    tokens: bool = False,
) -> Batches:
    """Prediction batches from a model (imports torch only when called); with ``tokens``, the
    predictions are :class:`~spectrumkd.evaluate.generation.Sample` objects (text and token ids)."""
    from spectrumkd.evaluate.generation import iter_generate, iter_samples

    generator = iter_samples if tokens else iter_generate

    def batches(start: int) -> Iterator[tuple[int, list]]:
        yield from generator(
            model, tokenizer, prompts, settings=settings, seed=seed, batch_size=batch_size,
            start=start,
        )

    return batches


def list_batches(predictions: Sequence[str], batch_size: int) -> Batches:
    """Prediction batches from a list already in hand (a completions file)."""

    def batches(start: int) -> Iterator[tuple[int, list[str]]]:
        for first in range(start, len(predictions), batch_size):
            yield first, list(predictions[first: first + batch_size])

    return batches


def read_completions(
    path: str | os.PathLike, items: Sequence[EvalItem], *, allow_many: bool = False
) -> list[list[str]]:
    """Completions per item from JSON Lines ``{"task_id"|"id", "completion"|"prediction"}``.

    Every item needs at least one completion (exactly one unless ``allow_many``), else an error
    names the missing ids; a row without an id or a completion string is an error naming its
    line. Rows whose id is not among ``items`` (beyond ``--limit``) are ignored.
    """
    known = {item.id for item in items}
    found: dict[str, list[str]] = defaultdict(list)
    for line_no, row in read_rows(path):
        raw_id = row.get("task_id", row.get("id"))
        text = row.get("completion", row.get("prediction"))
        where = f"{path}:{line_no}"
        if raw_id is None or not isinstance(text, str):
            raise SpectrumKDError(
                f"{where}: needs 'task_id' (or 'id') and a 'completion' string"
            )
        if str(raw_id) not in known:
            continue  # beyond --limit, or another set's row; checked below for typos
        found[str(raw_id)].append(text)
    missing = [item.id for item in items if item.id not in found]
    if missing:
        raise SpectrumKDError(
            f"{path}: no completion for {len(missing)} of {len(items)} examples "
            f"(first: {', '.join(missing[:5])})"
        )
    if not allow_many:
        many = [k for k, v in found.items() if len(v) > 1]
        if many:
            raise SpectrumKDError(f"{path}: several completions for {many[0]!r}")
    return [found[item.id] for item in items]


# ----------------------------------------------------------------------------- instruct


def score_instruct(items: list[EvalItem], predictions: list) -> list[dict]:
    """ROUGE-L rows for one batch; a prediction that is a ``Sample`` also keeps its ``tokens``."""
    rows = []
    for item, pred in zip(items, predictions):
        text = pred if isinstance(pred, str) else pred.text
        row = {"id": item.id, "prediction": text,
               "score": rouge_l(prediction=text, references=list(item.references))}
        if not isinstance(pred, str):
            row["tokens"] = list(pred.tokens)
        rows.append(row)
    return rows


def run_instruct(
    eval_set: EvalSet, *, out_dir: Path, seeds: Sequence[int], header_base: dict,
    batches_for_seed: Callable[[int, list[str]], Batches], log=None,
) -> dict:
    """All seeds of one instruction set; returns its results entry."""
    prompts = [item.prompt for item in eval_set.items]
    per_seed, files = {}, []
    for seed in seeds:
        rel = Path("generations") / eval_set.name / f"seed{seed}.jsonl"
        header = {**header_base, "set": eval_set.name, "seed": seed,
                  "data_fingerprint": eval_set.fingerprint}
        rows = run_job(out_dir / rel, generations_header(**header), eval_set.items,
                       batches_for_seed(seed, prompts), score_instruct, log=log)
        per_seed[str(seed)] = sum(r["score"] for r in rows) / len(rows)
        files.append(str(rel))
    mean, std = mean_std(list(per_seed.values()))
    return {"metric": "rougeL", "rougeL": mean, "std": std, "per_seed": per_seed,
            "n": len(eval_set.items), "source": eval_set.source,
            "data_fingerprint": eval_set.fingerprint, "files": files}


# ----------------------------------------------------------------------------- math


def math_prompts(eval_set: EvalSet, shots: int | None = None) -> list[str]:
    """The Figure 7 few-shot prompt of each item."""
    return [math_eval.build_prompt(item.prompt, eval_set.name, shots=shots) for item in eval_set.items]


def score_math(items: list[EvalItem], predictions: list[str]) -> list[dict]:
    """Extracted answer vs gold answer rows for one batch."""
    scored = math_eval.score_predictions(
        predictions, [item.references[0] for item in items],
        [item.extra.get("answer") for item in items],
    )
    return [
        {"id": item.id, "prediction": pred, **s, "score": 100.0 if s["correct"] else 0.0}
        for item, pred, s in zip(items, predictions, scored)
    ]


def run_math(
    eval_set: EvalSet, *, out_dir: Path, header_base: dict, batches: Batches, tag: str, log=None
) -> dict:
    """One math set (greedy, one pass); returns its results entry."""
    rel = Path("generations") / eval_set.name / f"{tag}.jsonl"
    header = {**header_base, "set": eval_set.name, "seed": None,
              "data_fingerprint": eval_set.fingerprint}
    rows = run_job(out_dir / rel, generations_header(**header), eval_set.items, batches,
                   score_math, log=log)
    accuracy = sum(r["score"] for r in rows) / len(rows)
    return {"metric": "pass@1", "pass@1": accuracy, "n": len(rows), "source": eval_set.source,
            "data_fingerprint": eval_set.fingerprint, "files": [str(rel)]}


# ----------------------------------------------------------------------------- code


def code_program(item: EvalItem, completion: str, kind: str) -> code_eval.CodeJob:
    """The sandboxed test job of one completion (HumanEval or MBPP)."""
    if item.extra["kind"] == "humaneval":
        return code_eval.humaneval_program(
            item.prompt, completion, item.extra["test"], item.extra["entry_point"], kind=kind
        )
    return code_eval.mbpp_program(completion, item.extra["test"], kind=kind)


def code_prompts(eval_set: EvalSet) -> list[str]:
    """The Figure 8 prompt of each item."""
    return [code_eval.FIGURE8_TEMPLATE.format(instruction=item.prompt) for item in eval_set.items]


def code_scorer(kind: str, limits: code_eval.SandboxLimits, workers: int) -> Scorer:
    """A batch scorer that runs each completion's program in the sandbox."""

    def score(items: list[EvalItem], predictions: list[str]) -> list[dict]:
        programs = [code_program(item, pred, kind) for item, pred in zip(items, predictions)]
        results = code_eval.run_programs(programs, limits=limits, workers=workers)
        return [
            {"id": item.id, "prediction": pred, "status": res.status,
             "score": 100.0 if res.passed else 0.0}
            for item, pred, res in zip(items, predictions, results)
        ]

    return score


def code_entry(eval_set: EvalSet, rows: list[dict], files: list[str]) -> dict:
    """Results entry from per-sample rows: pass@1 (and pass@10/100 when n allows), percent."""
    by_id: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_id[row["id"]].append(row["score"] > 0)
    counts = [(len(by_id[item.id]), sum(by_id[item.id])) for item in eval_set.items]
    entry = {"metric": "pass@1", "n": len(eval_set.items), "source": eval_set.source,
             "data_fingerprint": eval_set.fingerprint, "files": files,
             "samples_per_task": min(n for n, _ in counts)}
    for k in (1, 10, 100):
        value = code_eval.mean_pass_at_k(counts, k)
        if value is not None:
            entry[f"pass@{k}"] = value
    return entry


def run_code_samples(
    eval_set: EvalSet, samples: list[list[str]], *, out_dir: Path, header_base: dict,
    limits: code_eval.SandboxLimits, workers: int, log=None,
) -> dict:
    """Score a HumanEval samples file (any number of completions per task)."""
    flat_items = [item for item, texts in zip(eval_set.items, samples) for _ in texts]
    flat_texts = [text for texts in samples for text in texts]
    rel = Path("generations") / eval_set.name / "samples.jsonl"
    header = {**header_base, "set": eval_set.name, "seed": None,
              "data_fingerprint": eval_set.fingerprint}
    rows = run_job(out_dir / rel, generations_header(**header), flat_items,
                   list_batches(flat_texts, 32), code_scorer("body", limits, workers), log=log)
    return code_entry(eval_set, rows, [str(rel)])


def run_code_model(
    eval_set: EvalSet, *, out_dir: Path, header_base: dict, batches: Batches,
    limits: code_eval.SandboxLimits, workers: int, log=None,
) -> dict:
    """Greedy Figure 8 generations of a model, run in the sandbox."""
    rel = Path("generations") / eval_set.name / "greedy.jsonl"
    header = {**header_base, "set": eval_set.name, "seed": None,
              "data_fingerprint": eval_set.fingerprint}
    rows = run_job(out_dir / rel, generations_header(**header), eval_set.items, batches,
                   code_scorer("response", limits, workers), log=log)
    return code_entry(eval_set, rows, [str(rel)])
