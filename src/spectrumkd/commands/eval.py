"""``spectrumkd eval``: generate and score with the paper's protocols; write DIR/results.json.

``spectrumkd eval --model PATH [--gguf-file F] [--suite instruct|math|code] [--sets a,b]
[--data FILE] [--completions FILE] [--seeds 10,20,30,40,50] [--limit N] [--batch-size N]
[--max-new-tokens N] [--teacher SPEC] [--panel-rows N] [--no-panel] --out DIR`` writes
``DIR/generations/{set}/...jsonl`` and ``DIR/results.json`` (see :mod:`spectrumkd.evaluate.results`);
instruction sets also get the metric panel (:mod:`spectrumkd.evaluate.panel`), whose held-out KL
and sample NLL need ``--teacher``. ``--completions`` scores a file of
``{"task_id"|"id", "completion"}`` instead of generating (HumanEval's samples format for code).
Interrupted runs resume: finished set/seed files are skipped, partial ones continue.
torch is imported only when a model is loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from spectrumkd.evaluate.pipeline import DEFAULT_SEEDS, SUITES

HELP = "Evaluate a model (or a completions file): ROUGE-L, math pass@1, sandboxed code pass@1."


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="smollm2, qwen2.5-coder-0.5b/-1.5b, a hub id, folder, .gguf "
                   "file or tiny-random:llama")
    p.add_argument("--gguf-file", help="GGUF file name inside the --model folder")
    p.add_argument("--suite", default="instruct", choices=SUITES,
                   help="instruct (ROUGE-L, default), math (GSM8K/MATH) or code (HumanEval/MBPP)")
    p.add_argument("--sets", help="comma-separated sets (instruct: dolly,self-inst,vicuna,sinst,"
                   "unni; math: gsm8k,math; code: humaneval,mbpp); default: the suite's sets")
    p.add_argument("--data", help="local data file for the (single) set instead of the lookup")
    p.add_argument("--data-root", help="folder holding {set}/valid.jsonl etc. (default: "
                   "$SPECTRUMKD_DATA, ./data, ../shared/data, then the hub)")
    p.add_argument("--completions", help="JSON Lines of {task_id|id, completion}: score these "
                   "instead of generating (no --model needed)")
    p.add_argument("--seeds", type=_seeds, default=list(DEFAULT_SEEDS),
                   help="sampling seeds of the instruct suite (default 10,20,30,40,50)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples of each set")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument("--max-new-tokens", type=int, help="cap on new tokens (default: instruct "
                   "512 minus the prompt, math/code 1024)")
    p.add_argument("--shots", type=int, help="math few-shot examples (default 8 GSM8K, 4 MATH)")
    p.add_argument("--timeout", type=float, default=10.0, help="code: seconds per program (default 10)")
    p.add_argument("--memory-mb", type=int, default=1024,
                   help="code: memory cap per program in MiB, heap plus its tmpfs (a memory cgroup "
                        "where root can make one; default 1024)")
    p.add_argument("--workers", type=int, default=2, help="code: programs run in parallel (default 2)")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="code: run model-written programs without OS isolation when bubblewrap "
                   "is missing (at your own risk; the default refuses)")
    p.add_argument("--teacher", help="instruct: the teacher of the metric panel (held-out KL, its "
                   "NLL of the samples); a spec as for --model, e.g. smollm2 or a folder")
    p.add_argument("--teacher-gguf-file", help="GGUF file name inside the --teacher folder")
    p.add_argument("--panel-rows", type=int, help="instruct: teacher-forced and sample rows of the "
                   "panel, the set's first N (default: all evaluated)")
    p.add_argument("--no-panel", dest="panel", action="store_false",
                   help="instruct: skip the metric panel (greedy answers, teacher-forced pass)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32 (default on CPU), bfloat16, float16")
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.evaluate.pipeline import EvalOptions, evaluate

    evaluate(EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)}))
    return 0
