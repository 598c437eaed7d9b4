"""A prepared GPU check (issue 14): one command, < 8 minutes on one H200, last stdout line one JSON.

Run on a CUDA machine from the repository root: ``python benchmarks/gpu_check.py``. It needs only
torch, transformers (and their own dependencies: numpy, tqdm); accelerate and peft are not used.
No downloads: the models are random-weight Qwen2 models built from configs in the process.
``--dry-run`` runs every part on the CPU with tiny shapes (the test suite runs it), so the script is
known to work before a GPU is ever lent.

What it measures (bf16 weights, the real spectrumkd loss functions):

1. **KD step**, ``student`` ≈ Qwen2.5-0.5B (24 layers × 896, 494 M parameters) with ``teacher`` ≈
   Qwen2.5-1.5B (28 layers × 1536, 1.54 B), vocab 151,936, 8,192 tokens per step (4 × 2,048), the
   paper's objective (fkl, τ = 2, ce_weight 0.3, 25% of positions masked as prompt): teacher
   forward (no grad), student forward, loss, backward, AdamW step. Variants:
   ``dense`` (``kd_loss`` on both models' full logits), ``fused`` (``fused_kd_loss`` from both
   models' last hidden states and LM heads, ``chunk_size`` ``--fused-chunk`` tokens),
   ``fused_compiled`` (the same with ``compiled=True``; skipped when the time budget is short).
   Reported per variant: median step time over ``--steps`` timed steps after one warm-up, tokens/s,
   peak CUDA memory (``max_memory_allocated``) in total and above the resident models and
   optimizer state. Anchor: Liger-Kernel reports 11.1 vs 68.9 GB (chunked vs dense) on an H100 at
   8k tokens and a 128k vocabulary.
2. **Scoring throughput**: ``spectrumkd.scoring.metrics.batch_scores`` (mean token CE of the
   untrained student) over examples of mixed lengths in length-bucketed batches
   (``scoring.batching.make_batches``), real (unpadded) tokens per second.
3. **bf16 vs fp32**: the same batch (2,048 tokens) through fp32 copies of both models (TF32 off)
   and through the bf16 models; the KD loss must agree within ``BF16_TOL`` = 2e-2 relative (bf16
   keeps 8 significant bits, ~4e-3 per rounding; the logits of 24-28 rounded layers differ by ~1%),
   and the ``dense`` and ``fused`` losses on the same bf16 models within ``PATH_TOL`` = 1e-3
   (both compute in float32 from the same bf16 logits; they differ only by GEMM tiling).

Not here: multi-GPU (see docs/scaling.md and configs/accelerate/), real checkpoints, generation.
This script has not yet run on a GPU in this repository's history unless a results file says so.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

BF16_TOL = 2e-2  # relative: KD loss of the bf16 models vs fp32 copies
PATH_TOL = 1e-3  # relative: dense vs fused loss on the same bf16 models
LOSS_KW = {"divergence": "fkl", "temperature": 2.0, "ce_weight": 0.3}

# Qwen2.5-0.5B / -1.5B shapes (config.json of the hub models), random weights.
FULL = {
    "vocab": 151936, "batch": 4, "seq": 2048, "check_tokens": 2048, "score_examples": 256,
    "student": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                "num_attention_heads": 14, "num_key_value_heads": 2},
    "teacher": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                "num_attention_heads": 12, "num_key_value_heads": 2},
}  # fmt: skip
DRY = {
    "vocab": 1000, "batch": 2, "seq": 64, "check_tokens": 64, "score_examples": 12,
    "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2},
    "teacher": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2},
}  # fmt: skip


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_model(shape: dict, vocab: int, device: torch.device, seed: int):
    """A random-weight Qwen2 causal LM with tied embeddings, in bf16 on ``device``.

    The tied embedding / LM head is scaled ×5 after the default init (std 0.02): the logits then
    spread with a standard deviation of ~3, as a trained LM's do, instead of being near-uniform
    (where every divergence is ~0 and the precision check would test nothing).
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=32768, tie_word_embeddings=True,
                      rope_theta=1e6, **shape)  # fmt: skip
    torch.manual_seed(seed)
    with device:
        model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5.0)
    return model.to(torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def make_batch(cfg: dict, device: torch.device, tokens: int | None = None, seed: int = 0) -> dict:
    """Random token ids and shifted labels ``[B, L]`` (25% of each row masked as prompt)."""
    g = torch.Generator().manual_seed(seed)
    seq = cfg["seq"]
    batch = max(1, (tokens or cfg["batch"] * seq) // seq)
    ids = torch.randint(0, cfg["vocab"], (batch, seq), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]  # position t predicts token t+1
    labels[:, : seq // 4] = -100  # the prompt
    return {"input_ids": ids.to(device), "labels": labels.to(device)}


def kd_loss_of(variant: str, student, teacher, batch: dict, chunk: int):
    """The KD objective of one batch through ``variant`` (dense or fused[_compiled])."""
    from spectrumkd.losses import fused_kd_loss, kd_loss

    ids, labels = batch["input_ids"], batch["labels"]
    if variant == "dense":
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, use_cache=False).logits  # [B, L, V]
        s_logits = student(input_ids=ids, use_cache=False).logits
        return kd_loss(s_logits, t_logits, labels, **LOSS_KW)
    with torch.no_grad():
        t_h = teacher.model(input_ids=ids, use_cache=False).last_hidden_state  # [B, L, H_t]
    s_h = student.model(input_ids=ids, use_cache=False).last_hidden_state  # [B, L, H]
    return fused_kd_loss(s_h, student.lm_head.weight, labels, teacher_hidden=t_h,
                         teacher_lm_head_weight=teacher.lm_head.weight, chunk_size=chunk,
                         compiled=variant == "fused_compiled", **LOSS_KW)  # fmt: skip


def kd_step_bench(variant, student, teacher, cfg, device, steps: int, chunk: int) -> dict:
    """Median step time, tokens/s and peak memory of full KD training steps."""
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, foreach=True)
    batch = make_batch(cfg, device)
    tokens = batch["input_ids"].numel()
    times: list[float] = []
    losses: list[float] = []
    resident = None
    try:
        for i in range(steps + 1):  # step 0: warm-up (allocator, cuBLAS, compile), not timed
            if i == 1:
                _sync(device)
                resident = _allocated(device)  # models + optimizer state after the first step
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            out = kd_loss_of(variant, student, teacher, batch, chunk)
            out.total.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - start)
            losses.append(float(out.total.detach()))
            del out
    except torch.OutOfMemoryError as err:  # reported in the JSON, not hidden
        return {"error": f"OutOfMemoryError: {str(err).splitlines()[0]}"}
    finally:
        del opt
    step = statistics.median(times)
    res = {"tokens_per_step": tokens, "step_s": round(step, 4),
           "tokens_per_s": round(tokens / step, 1), "losses": [round(x, 5) for x in losses]}  # fmt: skip
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        res["peak_gib"] = round(peak / 2**30, 3)
        res["peak_above_resident_gib"] = round((peak - (resident or 0)) / 2**30, 3)
    return res


def scoring_bench(student, cfg, device) -> dict:
    """Tokens/s of the untrained student's per-example CE scores, bucketed batches."""
    from spectrumkd.data import Collator, Example
    from spectrumkd.scoring.batching import make_batches
    from spectrumkd.scoring.metrics import batch_scores

    g = torch.Generator().manual_seed(1)
    seq = cfg["seq"]
    exs = []
    for i in range(cfg["score_examples"]):
        n = int(torch.randint(seq // 8, seq // 2 + 1, (1,), generator=g))  # Dolly-like lengths
        ids = torch.randint(0, cfg["vocab"], (n,), generator=g).tolist()
        exs.append(Example(f"s{i}", "", "", [], ids, [-100] * (n // 4) + ids[n // 4 :]))
    batches = make_batches([len(e.input_ids) for e in exs], cfg["batch"] * seq)
    collate = Collator(0)
    student.eval()
    scores = []
    with torch.no_grad():
        first = collate([exs[i] for i in batches[0]])
        batch_scores(student, {k: v.to(device) for k, v in first.items()})  # warm-up
        _sync(device)
        start = time.perf_counter()
        for b in batches:
            batch = {k: v.to(device) for k, v in collate([exs[i] for i in b]).items()}
            scores.extend(batch_scores(student, batch).tolist())
        _sync(device)
        seconds = time.perf_counter() - start
    student.train()
    real = sum(len(e.input_ids) for e in exs)
    finite = all(s == s and abs(s) != float("inf") for s in scores)
    return {"examples": len(exs), "batches": len(batches), "tokens": real,
            "seconds": round(seconds, 3), "tokens_per_s": round(real / seconds, 1),
            "scores_finite": finite, "mean_score": round(sum(scores) / len(scores), 4)}  # fmt: skip


def precision_check(student, teacher, cfg, device, chunk: int) -> dict:
    """KD loss of fp32 copies vs the bf16 models, and dense vs fused on the bf16 models."""
    batch = make_batch(cfg, device, tokens=cfg["check_tokens"], seed=3)
    with torch.no_grad():
        dense16 = kd_loss_of("dense", student, teacher, batch, chunk)
        fused16 = kd_loss_of("fused", student, teacher, batch, chunk)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        s32, t32 = copy.deepcopy(student).float(), copy.deepcopy(teacher).float()
        with torch.no_grad():
            dense32 = kd_loss_of("dense", s32, t32, batch, chunk)
        del s32, t32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    if device.type == "cuda":
        torch.cuda.empty_cache()

    def rel(a, b):
        return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)

    out = {"tokens": batch["input_ids"].numel(),
           "fp32": {"total": float(dense32.total), "ce": float(dense32.ce), "kd": float(dense32.kd)},
           "bf16": {"total": float(dense16.total), "ce": float(dense16.ce), "kd": float(dense16.kd)},
           "bf16_vs_fp32_rel": rel(dense16.total, dense32.total), "bf16_tolerance": BF16_TOL,
           "dense_vs_fused_bf16_rel": rel(fused16.total, dense16.total), "path_tolerance": PATH_TOL}  # fmt: skip
    out["ok"] = out["bf16_vs_fp32_rel"] <= BF16_TOL and out["dense_vs_fused_bf16_rel"] <= PATH_TOL
    return out


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--steps", type=int, default=3, help="timed KD steps per variant")
    p.add_argument("--fused-chunk", type=int, default=1024,
                   help="tokens per chunk of the fused loss (1024 × 151936 fp32 = 0.6 GB)")  # fmt: skip
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds; optional parts (fused_compiled) are skipped past half of it")  # fmt: skip
    args = p.parse_args(argv)
    started = time.perf_counter()
    cfg = DRY if args.dry_run else FULL
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available (use --dry-run on a CPU machine)")
    steps = 1 if args.dry_run else args.steps
    chunk = 16 if args.dry_run else args.fused_chunk
    import transformers

    result: dict = {"check": "gpu", "dry_run": args.dry_run, "device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "vocab": cfg["vocab"], "loss": LOSS_KW}  # fmt: skip
    _log(f"building random-weight models on {device} ...")
    student = build_model(cfg["student"], cfg["vocab"], device, seed=1).train()
    teacher = build_model(cfg["teacher"], cfg["vocab"], device, seed=2).eval().requires_grad_(False)
    result["student_params"], result["teacher_params"] = n_params(student), n_params(teacher)
    _log(f"student {result['student_params'] / 1e6:.0f} M, teacher "
         f"{result['teacher_params'] / 1e6:.0f} M parameters ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    steps_out = {}
    initial = {k: v.detach().clone() for k, v in student.state_dict().items()}
    for variant in ("fused", "dense", "fused_compiled"):
        student.load_state_dict(initial)  # every variant trains from the same weights
        if variant == "fused_compiled" and time.perf_counter() - started > args.budget / 2:
            steps_out[variant] = {"skipped": "time budget"}
            continue
        _log(f"KD step: {variant} ...")
        steps_out[variant] = kd_step_bench(variant, student, teacher, cfg, device, steps, chunk)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _log(f"  {json.dumps(steps_out[variant])}")
    result["kd_step"] = steps_out
    del initial
    d, f = steps_out["dense"], steps_out["fused"]
    if "losses" in d and "losses" in f:  # same weights, same batch: the first losses must agree
        result["first_loss_dense_vs_fused_rel"] = abs(f["losses"][0] - d["losses"][0]) / abs(d["losses"][0])
    if "peak_gib" in d and "peak_gib" in f:
        result["fused_over_dense"] = {
            "peak_memory": round(f["peak_gib"] / d["peak_gib"], 4),
            "peak_above_resident": round(f["peak_above_resident_gib"] / d["peak_above_resident_gib"], 4),
            "tokens_per_s": round(f["tokens_per_s"] / d["tokens_per_s"], 4),
        }
    result["liger_anchor_h100_gb"] = {"chunked": 11.1, "dense": 68.9, "vocab": 128256, "tokens": 8192}
    _log("scoring ...")
    result["scoring"] = scoring_bench(student, cfg, device)
    _log("bf16 vs fp32 ...")
    result["precision"] = precision_check(student, teacher, cfg, device, chunk)
    result["ok"] = bool(result["precision"]["ok"] and result["scoring"]["scores_finite"]
                        and all("error" not in v for v in steps_out.values())
                        and result.get("first_loss_dense_vs_fused_rel", 1.0) <= PATH_TOL)  # fmt: skip
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
