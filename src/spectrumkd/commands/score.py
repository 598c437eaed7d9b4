"""``spectrumkd score``: the arguments of :func:`spectrumkd.scoring.pipeline.score`.

The pipeline (open the model, build examples, score, write the scores file and dropped.jsonl; one
or many processes) is the library's; this module parses the options and prints the summary.
Imports torch and transformers only inside ``run``; ``--out`` must name a file, not a directory.
"""

from __future__ import annotations

import argparse

from spectrumkd.commands.options import non_negative_int, out_file, positive_int

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
                   help="smollm2, qwen2.5-coder-0.5b/-1.5b, a hub id, local folder, .gguf file, "
                   "or tiny-random:llama|gpt2[?layers=2&hidden=64]")
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
    p.add_argument("--num-shots", type=non_negative_int, default=8, help="few-shot examples (default 8)")
    p.add_argument("--metric", default="ce", choices=METRICS,
                   help="difficulty metric (default ce)")
    p.add_argument("--reduction", default="mean", choices=REDUCTIONS,
                   help="per-example reduction over response tokens (default mean)")
    p.add_argument("--batch-tokens", type=positive_int, default=4096,
                   help="padded tokens per batch, rows × longest (default 4096)")
    p.add_argument("--max-prompt-length", type=positive_int, default=256, help="drop longer prompts (256)")
    p.add_argument("--max-length", type=positive_int, default=512, help="drop longer examples (512)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="rougel: greedy answer length")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N rows")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "fp32", "bf16", "fp16"],
                   help="model dtype (default float32; bf16 only pays on a GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    p.add_argument("--no-gguf-cache", action="store_true",
                   help="do not keep a dequantised copy of a GGUF model under ~/.cache/spectrumkd")
    p.add_argument("--overwrite", action="store_true", help="replace a scores file from another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="scores JSON Lines file; dropped.jsonl goes beside it")


def run(args: argparse.Namespace) -> int:
    from spectrumkd.scoring.pipeline import ScoreOptions, score

    out = out_file(args.out, what="scores file", example="scores.jsonl")
    summary = score(ScoreOptions(
        model=args.model, data=args.data, out=out, gguf_file=args.gguf_file, split=args.split,
        fields=dict(args.field), template=args.template, few_shot=args.few_shot,
        num_shots=args.num_shots, metric=args.metric, reduction=args.reduction,
        batch_tokens=args.batch_tokens, max_prompt_length=args.max_prompt_length,
        max_length=args.max_length, max_new_tokens=args.max_new_tokens, limit=args.limit,
        dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
        gguf_cache=not args.no_gguf_cache, overwrite=args.overwrite, progress=not args.no_progress,
    ))
    if summary is not None:  # the main process
        print(summary.line(args.metric, args.reduction))
    return 0
