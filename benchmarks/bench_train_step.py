"""Step times of the training loop: SFT, teacher forward, online KD, KD from the teacher cache.

Targets (DESIGN.md §8): a KD step from cached top-k targets ≤ 1.10× a plain student SFT step; an
online KD step ≤ 1.15× (SFT step + teacher forward); ≤ 1 KiB per token at k = 64.

Models: random llama, vocab 8192, student 2 layers × 128 hidden, teacher 4 layers × 256 hidden
(≥ 3× the student's parameters), fp32 on CPU; batch 8 × 128 tokens (96 response tokens each).
Each round runs every variant once through the real loop (``spectrumkd.train.loop.train``, one
epoch of STEPS optimizer steps; the first step of each run is warm-up and dropped), alternating
variants; the reported time is the median over rounds of each run's median step time. The step
time is the loop's own per-step wall time (forward, loss, backward, clip, AdamW).
Last stdout line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator, Example
from spectrumkd.models import tiny_random_model
from spectrumkd.train.config import load_config
from spectrumkd.train.loop import train
from spectrumkd.train.teacher_cache import write_teacher_cache

VOCAB, SEQ, PROMPT, BATCH, STEPS, ROUNDS, K = 8192, 128, 32, 8, 5, 3, 64


class _Tok:  # the loop needs only len() and pad/eos ids
    pad_token_id, eos_token_id = 1, 0

    def __len__(self) -> int:
        return VOCAB


def examples(n: int) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(2, VOCAB, (SEQ,), generator=g).tolist()
        out.append(Example(f"b{i}", "", "", [], ids, [-100] * PROMPT + ids[PROMPT:]))
    return out


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def run_variant(mode: str, exs, teacher, cache) -> float:
    cfg = load_config(None, teacher={"spec": "bench"}, student={"spec": "bench"},
                      loss={"mode": mode}, curriculum={"kind": "full", "epochs": 1},
                      optim={"batch_size": BATCH, "lr": 1e-4}, progress=False)
    student = tiny_random_model(vocab_size=VOCAB, layers=2, hidden=128, seed=1).train()
    plan = make_plan("full", [e.id for e in exs], list(range(len(exs))), epochs=1)
    times: list[float] = []
    train(cfg, student=student, tokenizer=_Tok(), examples=exs, plan=plan,
          teacher=teacher if mode == "kd" and cache is None else None, teacher_cache=cache,
          on_step=lambda row: times.append(row["tokens"] / row["tokens_per_s"]))
    return statistics.median(times[1:])


def teacher_forward(teacher, exs) -> float:
    batch = Collator(1)(exs[:BATCH])
    times = []
    with torch.no_grad():
        for _ in range(STEPS):
            t0 = time.perf_counter()
            teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    torch.manual_seed(0)
    exs = examples(BATCH * STEPS)
    teacher = tiny_random_model(vocab_size=VOCAB, layers=4, hidden=256, seed=2)
    student_params = n_params(tiny_random_model(vocab_size=VOCAB, layers=2, hidden=128, seed=1))
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_teacher_cache(Path(tmp) / "tc", teacher, exs, Collator(1), vocab_size=VOCAB, k=K)
        disk = sum(f.stat().st_size for f in (Path(tmp) / "tc").glob("*.npy"))
        bytes_per_token = disk / cache.n_tokens
        runs: dict[str, list[float]] = {"sft": [], "teacher_forward": [], "kd_online": [], "kd_cached": []}
        for _ in range(ROUNDS):
            runs["sft"].append(run_variant("sft", exs, None, None))
            runs["teacher_forward"].append(teacher_forward(teacher, exs))
            runs["kd_online"].append(run_variant("kd", exs, teacher, None))
            runs["kd_cached"].append(run_variant("kd", exs, None, cache))
    med = {k: statistics.median(v) for k, v in runs.items()}
    cached_ratio = med["kd_cached"] / med["sft"]
    online_ratio = med["kd_online"] / (med["sft"] + med["teacher_forward"])
    for k, v in med.items():
        print(f"{k:16s} {1000 * v:8.1f} ms  (rounds: {', '.join(f'{1000 * x:.1f}' for x in runs[k])})")
    print(f"cached KD / SFT = {cached_ratio:.3f}; online KD / (SFT + teacher fwd) = {online_ratio:.3f}; "
          f"cache {bytes_per_token:.0f} B/token at k={K}")
    print(json.dumps({
        "teacher_params": n_params(teacher), "student_params": student_params,
        "tokens_per_step": BATCH * SEQ, "step_ms": {k: round(1000 * v, 2) for k, v in med.items()},
        "cached_kd_over_sft": round(cached_ratio, 4), "cached_target": 1.10,
        "cached_met": cached_ratio <= 1.10,
        "online_kd_over_sft_plus_teacher": round(online_ratio, 4), "online_target": 1.15,
        "online_met": online_ratio <= 1.15,
        "cache_bytes_per_token": round(bytes_per_token, 1), "bytes_target": 1024,
        "bytes_met": bytes_per_token <= 1024,
    }))


if __name__ == "__main__":
    main()
