"""The evaluation pipeline behind ``spectrumkd eval``: a model (or a completions file) → results.

``evaluate(EvalOptions(...))`` loads the model once, runs each requested set with its suite's
protocol (:mod:`spectrumkd.evaluate.suites`: instruct = MiniLLM sampling over seeds + ROUGE-L,
math = greedy few-shot + answer match, code = greedy + sandboxed tests), writes
``out/generations/{set}/...jsonl`` and ``out/results.json`` after every set (so progress survives
an interruption, and finished set/seed files are skipped on a rerun), and returns the results
dict. An instruction set evaluated from a model also gets the metric panel
(:mod:`spectrumkd.evaluate.panel`: held-out CE and entropy, greedy ROUGE-L and, with ``teacher``,
held-out KL and the teacher's NLL of the samples) as ``sets.{set}.panel``.
Not here: argument parsing (:mod:`spectrumkd.commands.eval`) or comparisons.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.spec import MAX_SEED
from spectrumkd.evaluate.sets import SUITE_SETS
from spectrumkd.fileio import file_lock, refuse_overlap
from spectrumkd.rundir import LOCK_NAME, RESULTS_FILE

__all__ = ["EvalOptions", "evaluate", "SUITES", "DEFAULT_SEEDS"]

SUITES = tuple(SUITE_SETS)  # instruct, math, code
DEFAULT_SEEDS = (10, 20, 30, 40, 50)  # generation.INSTRUCT_SEEDS; that module imports torch


@dataclass
class EvalOptions:
    """What ``spectrumkd eval`` evaluates and how (each field is one command-line option)."""

    out: str | Path
    model: str | None = None
    gguf_file: str | None = None
    suite: str = "instruct"
    sets: str | None = None
    data: str | None = None
    data_root: str | None = None
    completions: str | None = None
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None
    shots: int | None = None
    timeout: float = 10.0
    memory_mb: int = 1024
    workers: int = 2
    allow_unsandboxed: bool = False
    device: str | None = None
    dtype: str | None = None
    teacher: str | None = None
    teacher_gguf_file: str | None = None
    panel: bool = True
    panel_rows: int | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.completions is None):
            raise SpectrumKDError("give either --model (generate) or --completions (score a file)")
        if self.suite not in SUITES:
            raise SpectrumKDError(f"unknown suite {self.suite!r}; use one of {SUITES}")
        if self.limit is not None and self.limit < 1:
            raise SpectrumKDError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise SpectrumKDError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.seeds:
            raise SpectrumKDError("no seeds given")
        bad_seeds = [x for x in self.seeds if not 0 <= x <= MAX_SEED]
        if bad_seeds:
            raise SpectrumKDError(f"--seeds {bad_seeds} outside [0, {MAX_SEED}]")
        if self.panel_rows is not None and self.panel_rows < 1:
            raise SpectrumKDError(f"--panel-rows must be >= 1, got {self.panel_rows}")
        if self.shots is not None and self.shots < 0:
            raise SpectrumKDError(f"--shots must be >= 0, got {self.shots}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise SpectrumKDError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise SpectrumKDError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        for name in ("memory_mb", "workers"):
            if getattr(self, name) < 1:
                raise SpectrumKDError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.teacher is not None and (self.model is None or self.suite != "instruct"
                                         or not self.panel):
            raise SpectrumKDError("--teacher is for the metric panel: --model, --suite instruct, "
                                  "without --no-panel")


def headline(name: str, entry: dict) -> str:
    """One set's result line; the ± is the std over generation seeds, shown only when there are
    several (one seed has no spread to report, not a spread of zero).

    >>> headline("dolly", {"metric": "rougeL", "rougeL": 1.39, "std": 0.0, "n": 20,
    ...                    "per_seed": {"10": 1.39}})
    'dolly: rougeL 1.39 (n=20, 1 seed)'
    >>> headline("dolly", {"metric": "rougeL", "rougeL": 1.4, "std": 0.1, "n": 20,
    ...                    "per_seed": {"10": 1.3, "20": 1.5}})
    'dolly: rougeL 1.40 ± 0.10 over 2 seeds (n=20)'
    """
    metric, seeds = entry["metric"], len(entry.get("per_seed", ()))
    text = f"{name}: {metric} {entry[metric]:.2f}"
    if "std" in entry and seeds > 1:
        return f"{text} ± {entry['std']:.2f} over {seeds} seeds (n={entry['n']})"
    return f"{text} (n={entry['n']}, 1 seed)" if seeds == 1 else f"{text} (n={entry['n']})"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(opts: EvalOptions):
    """``(model, tokenizer, settings, fingerprint, name)`` for generation, or the completions'."""
    from spectrumkd.evaluate.sets import file_fingerprint

    if opts.model is None:
        return None, None, None, file_fingerprint(opts.completions), f"completions:{opts.completions}"
    from spectrumkd.evaluate.generation import GREEDY, INSTRUCT
    from spectrumkd.models import model_fingerprint, open_model

    _log(f"loading {opts.model} ...")
    opened = open_model(opts.model, gguf_file=opts.gguf_file, dtype=opts.dtype, device=opts.device)
    model, tokenizer = opened.model, opened.tokenizer
    if opts.suite == "instruct":
        settings = INSTRUCT.with_(max_new_tokens=opts.max_new_tokens)
    else:
        from spectrumkd.evaluate.math import STOP_STRINGS

        settings = GREEDY.with_(max_new_tokens=opts.max_new_tokens)
        if opts.suite == "math":
            settings = settings.with_(stop_strings=STOP_STRINGS)
    return model, tokenizer, settings, model_fingerprint(model), opened.name


def _load_teacher(opts: EvalOptions, tokenizer):
    """``(teacher, fingerprint, name)`` for the metric panel, or None without ``--teacher``."""
    if opts.teacher is None:
        return None
    from spectrumkd.models import check_same_tokenizer, model_fingerprint, open_model

    _log(f"loading the teacher {opts.teacher} ...")
    opened = open_model(opts.teacher, gguf_file=opts.teacher_gguf_file, dtype=opts.dtype,
                        device=opts.device)
    check_same_tokenizer(opened.tokenizer, tokenizer, names=("teacher", "model"))
    return opened.model, model_fingerprint(opened.model), opened.name


def _instruct(opts, eval_set, out, header_base, model, tokenizer, settings, teacher=None) -> dict:
    from spectrumkd.evaluate import suites

    if model is not None:
        from spectrumkd.evaluate.generation import encode_prompts

        def batches_for_seed(seed, prompts):
            return suites.model_batches(model, tokenizer, prompts, settings=settings, seed=seed,
                                        batch_size=opts.batch_size, tokens=True)

        seeds = opts.seeds
        _, n_cut = encode_prompts(tokenizer, [i.prompt for i in eval_set.items],
                                  max_prompt_length=settings.max_prompt_length)
    else:
        texts = [t[0] for t in suites.read_completions(opts.completions, eval_set.items)]

        def batches_for_seed(seed, prompts):
            return suites.list_batches(texts, opts.batch_size)

        seeds, n_cut = ["completions"], 0
    entry = suites.run_instruct(eval_set, out_dir=out, seeds=seeds, header_base=header_base,
                                batches_for_seed=batches_for_seed, log=_log)
    entry["truncated_prompts"] = n_cut
    if model is not None and opts.panel:
        from spectrumkd.evaluate.panel import eval_panel

        entry["panel"] = eval_panel(eval_set, entry, out_dir=out, model=model, tokenizer=tokenizer,
                                    settings=settings, header_base=header_base, teacher=teacher,
                                    batch_size=opts.batch_size, rows=opts.panel_rows, log=_log)
    return entry


def _panel_line(name: str, panel: dict) -> str:
    """One line of the panel's numbers (and why any is absent)."""
    from spectrumkd.evaluate.results import PANEL_METRICS

    values = ", ".join(f"{k} {panel[k]:.3f}" for k in PANEL_METRICS if k in panel)
    absent = panel.get("absent") or {}
    why = "; ".join(f"{k} absent: {v}" for k, v in absent.items())
    rows = f"{panel['n_rows']} rows, {panel['n_skipped']} over the length limits"
    return f"{name} panel ({rows}): {values}" + (f" ({why})" if why else "")


def _math(opts, eval_set, out, header_base, model, tokenizer, settings) -> dict:
    from spectrumkd.evaluate import suites

    if model is not None:
        prompts = suites.math_prompts(eval_set, shots=opts.shots)
        batches = suites.model_batches(model, tokenizer, prompts, settings=settings, seed=0,
                                       batch_size=opts.batch_size)
        tag = "greedy"
    else:
        texts = [t[0] for t in suites.read_completions(opts.completions, eval_set.items)]
        batches, tag = suites.list_batches(texts, opts.batch_size), "completions"
    return suites.run_math(eval_set, out_dir=out, header_base=header_base, batches=batches,
                           tag=tag, log=_log)


def _code(opts, eval_set, out, header_base, model, tokenizer, settings, limits) -> dict:
    from spectrumkd.evaluate import suites

    if model is not None:
        batches = suites.model_batches(model, tokenizer, suites.code_prompts(eval_set),
                                       settings=settings, seed=0, batch_size=opts.batch_size)
        return suites.run_code_model(eval_set, out_dir=out, header_base=header_base,
                                     batches=batches, limits=limits, workers=opts.workers, log=_log)
    samples = suites.read_completions(opts.completions, eval_set.items, allow_many=True)
    return suites.run_code_samples(eval_set, samples, out_dir=out, header_base=header_base,
                                   limits=limits, workers=opts.workers, log=_log)


def evaluate(opts: EvalOptions) -> dict:
    """Run every set of ``opts`` and write ``opts.out/results.json``; returns the results.

    ``opts.out`` is locked for the run (the run directory's lock file, :data:`LOCK_NAME`): a
    second ``eval`` into the same folder stops with a one-line error instead of appending too.
    """
    from spectrumkd.evaluate import code as code_eval
    from spectrumkd.evaluate.sets import parse_set_names

    names = parse_set_names(opts.sets, opts.suite)
    if (opts.data or opts.completions) and len(names) != 1:
        raise SpectrumKDError("--data and --completions need exactly one set (use --sets NAME)")
    if opts.completions is not None and not Path(opts.completions).is_file():
        raise SpectrumKDError(
            f"--completions {opts.completions}: no such file (JSON Lines of "
            "{task_id|id, completion} rows, written by your own generator; or pass --model "
            "to generate the answers)"
        )
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise SpectrumKDError(f"--out {out}: is a file; eval writes a folder (results.json, generations/)")
    refuse_overlap({"--out results.json": out / RESULTS_FILE, "--out generations": out / "generations"},
                   {"--data": opts.data, "--completions": opts.completions})
    isolation = None
    if opts.suite == "code":  # before anything is written or loaded
        isolation = code_eval.check_isolation(allow_unsandboxed=opts.allow_unsandboxed)
        if isolation == "none":
            _log("warning: bubblewrap is unavailable; running programs WITHOUT OS isolation "
                 "(--allow-unsandboxed)")
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / LOCK_NAME, what=f"eval folder {out}"):
        return _evaluate(opts, names, out, isolation)


def _evaluate(opts: EvalOptions, names: list[str], out: Path, isolation) -> dict:
    from spectrumkd.evaluate import code as code_eval
    from spectrumkd.evaluate.results import finish_results, new_results, write_results
    from spectrumkd.evaluate.sets import load_set

    started = time.perf_counter()
    model, tokenizer, settings, fingerprint, model_name = _load(opts)
    teacher = _load_teacher(opts, tokenizer) if opts.suite == "instruct" else None
    run_settings = {
        "decoding": settings.to_dict() if settings else None,
        "seeds": opts.seeds if opts.suite == "instruct" and model is not None else None,
        "batch_size": opts.batch_size, "limit": opts.limit, "shots": opts.shots,
        "teacher": teacher[2] if teacher else None, "teacher_fingerprint": teacher[1] if teacher else None,
    }
    limits = None
    if opts.suite == "code":
        limits = code_eval.SandboxLimits(timeout=opts.timeout, memory_bytes=opts.memory_mb << 20,
                                         isolation=isolation)
        run_settings["sandbox"] = {"timeout": limits.timeout, "memory_bytes": limits.memory_bytes,
                                   "network_namespace": isolation == "bwrap",
                                   "isolation": isolation}
    header_base = {"suite": opts.suite, "model_fingerprint": fingerprint,
                   "settings": {k: run_settings[k] for k in ("decoding", "shots")}}
    results = new_results(suite=opts.suite, model=model_name, model_fingerprint=fingerprint,
                          settings=run_settings)
    for name in names:
        eval_set = load_set(name, opts.suite, data=opts.data, data_root=opts.data_root,
                            limit=opts.limit)
        _log(f"{name}: {len(eval_set.items)} examples from {eval_set.source}")
        args = (opts, eval_set, out, header_base, model, tokenizer, settings)
        if opts.suite == "instruct":
            entry = _instruct(*args, teacher)
        elif opts.suite == "math":
            entry = _math(*args)
        else:
            entry = _code(*args, limits)
        results["sets"][name] = entry
        write_results(out / RESULTS_FILE, finish_results(results))  # progress survives
        print(headline(name, entry), flush=True)
        if "panel" in entry:
            print(_panel_line(name, entry["panel"]), flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(out / RESULTS_FILE, finish_results(results))
    if len(names) > 1:
        print(f"average: {results['average']:.2f}")
    print(f"wrote {out / RESULTS_FILE}")
    return results
