"""Step times of the training loop: SFT, teacher forward, online KD, KD from the teacher cache.

Targets (docs/design.md §8): a KD step from cached top-k targets ≤ 1.10× a plain student SFT step; an
online KD step ≤ 1.15× (SFT step + teacher forward); ≤ 1 KiB per token at k = 64.

Models (random llama, tied embeddings, fp32 on CPU; sizes of a small real LM pair): vocab 32768,
student 4 layers × 256 hidden (10.8 M parameters), teacher 4 layers × 768 hidden (46 M, 4.3× the
student); batch 4 × 256 tokens (64 prompt + 192 response tokens each). Then the same at the
paper's Qwen2.5 vocabulary, 151936, with batch 2 × 256 and 5 steps per run so that it finishes in a
few minutes (there the LM heads are most of the compute: the setting where the loss and the
teacher cache matter most). About 6 minutes in all on the shared 2-core CPU; ``--vocabs 32768``
runs one size. Each round runs every
variant once through the real loop (``spectrumkd.train.loop.train``, one epoch of STEPS optimizer
steps; the first step of each run is warm-up and dropped), alternating variants (the order is
reversed every other round); the reported time is the median over rounds of each run's median step
time. The step time is the loop's own per-step wall time (forward, loss, backward, clip, AdamW).
Variants: ``sft`` (CE only), ``teacher_forward`` (no grad), ``kd_online`` (fkl, ce_weight 0.3,
τ = 1; the trainer's default chunked ``kd_loss``, ``default_chunk_size(V)`` tokens per chunk),
``kd_cached`` (``sparse_kd_loss`` from a k = 64 float16 cache). For reference, the dense-autograd
``kd_loss`` measured 1.33× (SFT + teacher forward) in this setup, the chunked default 1.06×.
The teacher cache's size is reported per token (on disk, k = 64 float16) and against a full bf16
teacher distribution (2·V bytes per token). Last stdout line: one JSON object (the first vocabulary's
figures at the top level, each vocabulary's under ``by_vocab``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator, Example
from spectrumkd.losses import default_chunk_size
from spectrumkd.models import tiny_random_model
from spectrumkd.train.config import load_config
from spectrumkd.train.loop import train
from spectrumkd.train.teacher_cache import write_teacher_cache

SEQ, PROMPT, ROUNDS, K = 256, 64, 3, 64
SIZES = {32768: {"batch": 4, "steps": 7}, 151936: {"batch": 2, "steps": 5}}  # per vocabulary
STUDENT = {"layers": 4, "hidden": 256, "seed": 1}
TEACHER = {"layers": 4, "hidden": 768, "seed": 2}


class _Tok:  # the loop needs only len() and pad/eos ids
    pad_token_id, eos_token_id = 1, 0

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab


def examples(n: int, vocab: int) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(2, vocab, (SEQ,), generator=g).tolist()
        out.append(Example(f"b{i}", "", "", [], ids, [-100] * PROMPT + ids[PROMPT:]))
    return out


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def run_variant(mode: str, exs, teacher, cache, vocab: int, batch: int) -> float:
    cfg = load_config(None, teacher={"spec": "bench"}, student={"spec": "bench"},
                      loss={"mode": mode},
                      curriculum={"kind": "full", "epochs": 1},
                      optim={"batch_size": batch, "lr": 1e-4}, progress=False)
    student = tiny_random_model(vocab_size=vocab, **STUDENT).train()
    plan = make_plan("full", [e.id for e in exs], list(range(len(exs))), epochs=1)
    times: list[float] = []
    train(cfg, student=student, tokenizer=_Tok(vocab), examples=exs, plan=plan,
          teacher=teacher if mode == "kd" and cache is None else None, teacher_cache=cache,
          on_step=lambda row: times.append(row["tokens"] / row["tokens_per_s"]))
    return statistics.median(times[1:])


def teacher_forward(teacher, exs, batch_size: int, steps: int) -> float:
    batch = Collator(1)(exs[:batch_size])
    times = []
    with torch.no_grad():
        for _ in range(steps):
            t0 = time.perf_counter()
            teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def bench(vocab: int) -> dict:
    """Every variant at one vocabulary size, alternating, medians over ROUNDS."""
    batch, steps = SIZES.get(vocab, SIZES[151936])["batch"], SIZES.get(vocab, SIZES[151936])["steps"]
    torch.manual_seed(0)
    exs = examples(batch * steps, vocab)
    teacher = tiny_random_model(vocab_size=vocab, **TEACHER)
    student_params = n_params(tiny_random_model(vocab_size=vocab, **STUDENT))
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_teacher_cache(Path(tmp) / "tc", teacher, exs, Collator(1), vocab_size=vocab, k=K)
        disk = sum(f.stat().st_size for f in (Path(tmp) / "tc").glob("*.npy"))
        bytes_per_token = disk / cache.n_tokens
        variants = {
            "sft": lambda: run_variant("sft", exs, None, None, vocab, batch),
            "teacher_forward": lambda: teacher_forward(teacher, exs, batch, steps),
            "kd_online": lambda: run_variant("kd", exs, teacher, None, vocab, batch),
            "kd_cached": lambda: run_variant("kd", exs, None, cache, vocab, batch),
        }
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(ROUNDS):
            for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
                runs[name].append(variants[name]())
    med = {k: statistics.median(v) for k, v in runs.items()}
    cached_ratio = med["kd_cached"] / med["sft"]
    online_ratio = med["kd_online"] / (med["sft"] + med["teacher_forward"])
    print(f"vocab {vocab}, batch {batch} × {SEQ} tokens:")
    for k, v in med.items():
        print(f"  {k:18s} {1000 * v:8.1f} ms  (rounds: {', '.join(f'{1000 * x:.1f}' for x in runs[k])})")
    print(f"  cached KD / SFT = {cached_ratio:.3f}; online KD / (SFT + teacher fwd) = "
          f"{online_ratio:.3f} (chunk {default_chunk_size(vocab)}); cache {bytes_per_token:.0f} "
          f"B/token at k={K} ({bytes_per_token / (2 * vocab):.2%} of a full bf16 distribution)",
          flush=True)
    return {
        "vocab": vocab, "chunk_size": default_chunk_size(vocab), "teacher_params": n_params(teacher), "student_params": student_params,
        "tokens_per_step": batch * SEQ, "step_ms": {k: round(1000 * v, 2) for k, v in med.items()},
        "cached_kd_over_sft": round(cached_ratio, 4), "cached_target": 1.10,
        "cached_met": cached_ratio <= 1.10,
        "online_kd_over_sft_plus_teacher": round(online_ratio, 4),
        "online_target": 1.15, "online_met": online_ratio <= 1.15,
        "cache_bytes_per_token": round(bytes_per_token, 1), "bytes_target": 1024,
        "bytes_met": bytes_per_token <= 1024,
        "cache_vs_full_bf16": round(bytes_per_token / (2 * vocab), 5),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocabs", type=int, nargs="+", default=list(SIZES))
    args = p.parse_args()
    started = time.perf_counter()
    results = [bench(v) for v in args.vocabs]
    print(json.dumps({**results[0], "by_vocab": {str(r["vocab"]): r for r in results},
                      "wall_seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
