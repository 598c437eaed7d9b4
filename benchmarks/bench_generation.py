"""Batched vs one-at-a-time generation on the same prompts (docs/design.md §8 target: >= 5x).

Greedy decoding of real DollyEval prompts (cut to --prompt-tokens) with ``spectrumkd.evaluate
.generate``: all prompts in batches of --batch-size vs one prompt per call. The two variants
alternate, --repeats times each; the medians are compared. Outputs must be identical (greedy,
fp32); the fraction that match is reported. Default model: a tiny random Llama built in-process
(2 layers, hidden 64); ``--model PATH`` takes any spec ``spectrumkd.models.load_model`` accepts
(e.g. the SmolLM2 GGUF: slow on 2 cores).

    .venv/bin/python benchmarks/bench_generation.py [--model SPEC] [--n 16] [--batch-size 16]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from spectrumkd.evaluate.generation import generate
from spectrumkd.evaluate.sets import load_set
from spectrumkd.models import load_model, load_tokenizer

TARGET = 5.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random:llama?layers=2&hidden=64&seed=0")
    p.add_argument("--n", type=int, default=16, help="number of prompts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    tok = load_tokenizer(args.model)
    prompts = [item.prompt for item in load_set("dolly", "instruct", data_root=args.data_root,
                                                limit=args.n).items]
    kw = dict(do_sample=False, max_new_tokens=args.new_tokens, max_length=None,
              max_prompt_length=args.prompt_tokens, no_repeat_ngram_size=0)
    generate(model, tok, prompts[:2], batch_size=2, **kw)  # warm-up

    times: dict[str, list[float]] = {"batched": [], "single": []}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for variant in ("batched", "single"):
            start = time.perf_counter()
            if variant == "batched":
                out = generate(model, tok, prompts, batch_size=args.batch_size, **kw)
            else:
                out = [generate(model, tok, [p], batch_size=1, **kw)[0] for p in prompts]
            times[variant].append(time.perf_counter() - start)
            outputs[variant] = out
    batched, single = statistics.median(times["batched"]), statistics.median(times["single"])
    match = sum(a == b for a, b in zip(outputs["batched"], outputs["single"])) / len(prompts)
    speedup = single / batched
    print(f"model {args.model}: {len(prompts)} prompts, {args.new_tokens} new tokens, "
          f"batch {args.batch_size}, {args.threads} thread(s)")
    print(f"batched      {batched:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['batched'])})")
    print(f"one-at-a-time {single:7.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times['single'])})")
    print(json.dumps({
        "benchmark": "generation",
        "model": args.model,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "batched_s": round(batched, 4),
        "single_s": round(single, 4),
        "speedup": round(speedup, 2),
        "identical_outputs": match,
        "target_speedup": TARGET,
        "target_met": speedup >= TARGET,
    }))


if __name__ == "__main__":
    main()
