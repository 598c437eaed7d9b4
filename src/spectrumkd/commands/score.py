"""``spectrumkd score``: data + model → difficulty scores file (DESIGN.md §4) and dropped.jsonl.

Runs under ``torchrun`` / ``accelerate launch`` too: each process scores its share of the batches
and the main process writes one file. Imports torch and transformers only inside ``run``. The main
process holds ``<out>.lock`` while it runs, so a second ``score`` on the same ``--out`` stops with
a one-line error instead of racing the first; ``--out`` must name a file, not a directory.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from pathlib import Path

from spectrumkd.commands.options import out_file, positive_int

HELP = "Score every training example's difficulty with the untrained student (one forward pass)."


def _field(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or key not in ("instruction", "input", "output", "references"):
        raise argparse.ArgumentTypeError(
            f"expected KEY=COLUMN with KEY in instruction/input/output/references, got {text!r}"
        )
    return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spectrumkd.data.templates import TEMPLATES
    from spectrumkd.scoring.metrics import METRICS, REDUCTIONS

    p.add_argument("--model", required=True,
                   help="hub id, local folder, .gguf file, or tiny-random:llama|gpt2[?layers=2&hidden=64]")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside the --model folder")
    p.add_argument("--data", required=True,
                   help="a .jsonl/.json/.parquet file, a packaged subset such as "
                   "spectrumkd:dolly/train.jsonl, or a hub dataset name")
    p.add_argument("--split", default="train", help="hub dataset split (default train)")
    p.add_argument("--field", type=_field, action="append", default=[], metavar="KEY=COLUMN",
                   help="map a column, e.g. --field instruction=prompt (repeatable)")
    p.add_argument("--template", default="dolly", choices=TEMPLATES,
                   help="prompt template (default dolly: the paper's Figure 5 / MiniLLM)")
    p.add_argument("--few-shot", default=None, metavar="FILE",
                   help="math template: draw few-shot examples from this training file")
    p.add_argument("--num-shots", type=int, default=8, help="few-shot examples (default 8)")
    p.add_argument("--metric", default="ce", choices=METRICS,
                   help="difficulty metric (default ce)")
    p.add_argument("--reduction", default="mean", choices=REDUCTIONS,
                   help="per-example reduction over response tokens (default mean)")
    p.add_argument("--batch-tokens", type=positive_int, default=4096,
                   help="padded tokens per batch, rows × longest (default 4096)")
    p.add_argument("--max-prompt-length", type=int, default=256, help="drop longer prompts (256)")
    p.add_argument("--max-length", type=int, default=512, help="drop longer examples (512)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="rougel: greedy answer length")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "fp32", "bf16", "fp16"],
                   help="model dtype (default float32; bf16 only pays on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    p.add_argument("--no-gguf-cache", action="store_true",
                   help="do not keep a dequantised copy of a GGUF model under ~/.cache/spectrumkd")
    p.add_argument("--overwrite", action="store_true", help="replace a scores file from another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="scores JSON Lines file; dropped.jsonl goes beside it")


def _init_distributed() -> tuple[int, int]:
    """Join the process group set up by torchrun / accelerate launch; returns (rank, local_rank)."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), local_rank


def run(args: argparse.Namespace) -> int:
    import torch

    out_file(args.out, what="scores file", example="scores.jsonl")
    rank, local_rank = _init_distributed()
    try:
        return _score(args, rank, local_rank)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _score(args: argparse.Namespace, rank: int, local_rank: int) -> int:
    import torch

    from spectrumkd import SpectrumKDError
    from spectrumkd.data import build_examples, load_records, math_few_shot, write_dropped
    from spectrumkd.fileio import file_lock
    from spectrumkd.models import cached_gguf_folder, describe, load_model, load_tokenizer
    from spectrumkd.scoring import run_scoring

    device = args.device
    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    spec, gguf_file = args.model, args.gguf_file
    is_gguf = gguf_file is not None or spec.endswith(".gguf")
    if is_gguf and not args.no_gguf_cache:
        path = Path(spec) / gguf_file if gguf_file else Path(spec)
        if not path.is_file():
            raise SpectrumKDError(f"GGUF file {path} does not exist")
        if rank == 0:
            spec = str(cached_gguf_folder(path))
        if torch.distributed.is_initialized():
            box = [spec]
            torch.distributed.broadcast_object_list(box, src=0)
            spec = box[0]
        else:
            spec = str(cached_gguf_folder(path))
        gguf_file = None
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(spec, gguf_file=gguf_file, trust_remote_code=args.trust_remote_code)
    model = load_model(spec, gguf_file=gguf_file, dtype=args.dtype, device=device,
                       trust_remote_code=args.trust_remote_code)
    t_load = time.perf_counter() - t0
    records = load_records(args.data, split=args.split, fields=dict(args.field), limit=args.limit)
    few_shot = []
    if args.few_shot:
        if args.template != "math":
            raise SpectrumKDError("--few-shot goes with --template math")
        few_shot = math_few_shot(load_records(args.few_shot), args.num_shots)
    examples, dropped = build_examples(
        records, tokenizer, template=args.template,
        max_prompt_length=args.max_prompt_length, max_length=args.max_length, few_shot=few_shot,
    )
    out = Path(args.out)
    # The lock comes just before the first write: bad input above fails without touching --out.
    with file_lock(out, what=f"scores file {out}") if rank == 0 else nullcontext():
        if rank == 0:
            write_dropped(out.parent / "dropped.jsonl", dropped)
        t1 = time.perf_counter()
        scores = run_scoring(
            model, examples, out,
            model_name=describe(args.model, gguf_file=args.gguf_file),
            template=args.template, max_length=args.max_length,
            max_prompt_length=args.max_prompt_length, metric=args.metric,
            reduction=args.reduction, batch_tokens=args.batch_tokens, overwrite=args.overwrite,
            tokenizer=tokenizer, max_new_tokens=args.max_new_tokens, progress=not args.no_progress,
        )
        t_score = time.perf_counter() - t1
    if rank == 0:
        mean = sum(scores) / len(scores)
        print(
            f"scored {len(scores)} examples ({len(dropped)} dropped → {out.parent / 'dropped.jsonl'}) "
            f"with {args.metric}/{args.reduction}: mean {mean:.4f}, min {min(scores):.4f}, "
            f"max {max(scores):.4f}; load {t_load:.1f} s, scoring {t_score:.1f} s → {out}"
        )
    return 0
