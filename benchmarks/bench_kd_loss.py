"""Peak memory and time of the KD loss (forward + backward): dense vs chunked vs fused, on CPU.

Run: ``.venv/bin/python benchmarks/bench_kd_loss.py`` (about 4 minutes on the shared 2-core CPU;
``--quick`` for a smoke run). Defaults: vocab 49152 × 2048 tokens (docs/design.md §8: ≥ 2048), then the
paper's Qwen2.5 vocabulary, 151936 × 512 tokens (fewer tokens, so that the dense variants' ~8
float32 ``N × V`` buffers stay under ~3 GB). Chunk sizes: ``default_chunk_size`` (chunked, ~4 MiB
per float32 chunk buffer) and ``default_fused_chunk_size`` (fused, ~32 MiB). Last stdout line: one
JSON object with the ratios and whether each docs/design.md §8 target is met (memory ≤ 0.20× dense, time
≤ 1.35× dense, loss rel. err ≤ 1e-5, gradient rel. err ≤ 1e-4; issue 13: gradients within 2e-5 of
float64).

Variants (objective: fkl, τ = 2, ce_weight = 0.3, 5% of labels masked, float32):
- ``dense``          ``kd_loss(student_logits, teacher_logits, labels)`` — plain autograd;
- ``chunked``        the same with ``chunk_size`` (analytic per-chunk gradients);
- ``dense_hidden``   ``kd_loss(hidden @ lm_head.T, teacher_logits, labels)`` — the logits built by
                     autograd from the student's hidden states (the fair baseline of the fused path);
- ``fused``          ``fused_kd_loss(hidden, lm_head, labels, teacher_logits=...)``;
- ``sft``            ``kd_loss(..., divergence="none")``: the plain CE step a KD step is compared to;
- ``sparse``         ``sparse_kd_loss`` from top-64 teacher targets (what a step reads from the
                     teacher cache: int32 ids + float16 log-probs, 64 × 6 = 384 bytes per token).
                     ``sparse / sft`` is the loss-level cached-step/SFT-step ratio (the whole-step
                     ratio, with models, is ``bench_train_step.py``'s).

How memory is measured: each variant runs in a fresh subprocess with glibc's mmap threshold pinned
to 128 KiB (``MALLOC_MMAP_THRESHOLD_``), so every tensor buffer larger than that is its own mapping
and is returned to the OS when freed; resident memory then follows torch's live CPU allocations.
The inputs are built first (in place, without temporaries), the resident set size is read
(``/proc/self/statm``), the loss runs forward + backward once, and the reported peak is
``ru_maxrss − RSS-before``: what the loss itself allocates at its peak, including the gradients it
returns (the ``[tokens × vocab]`` gradient of the logits for dense and chunked), excluding inputs.

Timing: the same single forward + backward per subprocess (every run pays its own page faults, as a
training step does); variants alternate within each repeat; medians over ``--repeats`` (≥ 3).
Correctness is checked in one more subprocess on the same inputs (loss relative error; gradient
error as ‖g − g_dense‖ / ‖g_dense‖), and against the float64 reference of ``tests/reference`` at
the benchmark's vocabulary on ``--check-tokens`` tokens (issue 13.5), for every path: the maximum
relative gradient error, ``max|g − g64| / max|g64|`` per token row for the gradients w.r.t. logits
and hidden states, and over the whole tensor for the LM-head gradient (its rows are float32 sums
over tokens of signed products, whose own cancellation, the same for every path including plain
autograd, is reported separately as ``lm_head_row_rel``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("dense", "chunked", "dense_hidden", "fused", "sft", "sparse")
TOPK = 64  # the teacher cache's default k
CACHE_BYTES_PER_TOKEN = TOPK * (4 + 2)  # int32 ids + float16 log-probs (train/teacher_cache.py)
LOSS_KW = {"divergence": "fkl", "temperature": 2.0, "ce_weight": 0.3}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(tokens: int, vocab: int, hidden: int, seed: int, need: str):
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, vocab, (tokens,), generator=g)
    y[torch.rand(tokens, generator=g) < 0.05] = -100
    t = torch.randn(tokens, vocab, generator=g).mul_(2.0)  # teacher logits (N, V)
    out = {"y": y, "t": t}
    if need in ("dense", "chunked", "check", "sft", "sparse"):
        out["s"] = torch.randn(tokens, vocab, generator=g).mul_(2.0)  # student logits (N, V)
    if need in ("dense_hidden", "fused", "check"):
        out["h"] = torch.randn(tokens, hidden, generator=g)
        out["w"] = torch.randn(vocab, hidden, generator=g).mul_(2.0 / hidden**0.5)
    if need == "sparse":  # the cache's targets: top-k log-probs, stored as float16
        from spectrumkd.losses import topk_teacher

        ids, lp = topk_teacher(out["t"], TOPK)
        out["tk_ids"], out["tk_lp"] = ids, lp.half().float()
    if need in ("sft", "sparse"):
        del out["t"]  # a cached or SFT step holds no teacher logits
    return out


def _run(variant: str, x: dict, chunk: int, fused_chunk: int):
    """Forward + backward of one variant; returns (loss value, gradient tensors)."""

    from spectrumkd.losses import fused_kd_loss, kd_loss, sparse_kd_loss

    if variant in ("sft", "sparse"):
        s = x["s"].requires_grad_()
        s.grad = None
        if variant == "sft":
            out = kd_loss(s, None, x["y"], divergence="none")
        else:
            out = sparse_kd_loss(s, x["tk_ids"], x["tk_lp"], x["y"], **LOSS_KW)
        out.total.backward()
        return out.total.item(), [s.grad]
    if variant in ("dense", "chunked"):
        s = x["s"].requires_grad_()
        s.grad = None
        out = kd_loss(
            s, x["t"], x["y"], chunk_size=chunk if variant == "chunked" else None, **LOSS_KW
        )
        out.total.backward()
        return out.total.item(), [s.grad]
    h, w = x["h"].requires_grad_(), x["w"].requires_grad_()
    h.grad = w.grad = None
    if variant == "dense_hidden":
        out = kd_loss(h @ w.T, x["t"], x["y"], **LOSS_KW)
    else:
        out = fused_kd_loss(h, w, x["y"], teacher_logits=x["t"], chunk_size=fused_chunk, **LOSS_KW)
    out.total.backward()
    return out.total.item(), [h.grad, w.grad]


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    x = _inputs(args.tokens, args.vocab, args.hidden, args.seed, args.worker)
    base = _rss_bytes()
    start = time.perf_counter()
    loss, grads = _run(args.worker, x, args.chunk_size, args.fused_chunk_size)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    del grads
    print(
        json.dumps({"variant": args.worker, "seconds": seconds, "peak_bytes": peak, "loss": loss})
    )


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(args: argparse.Namespace) -> None:
    """Values and gradients of chunked/fused against dense on the benchmark inputs; float64 reference."""

    sys.path.insert(0, str(REPO / "tests"))

    x = _inputs(args.tokens, args.vocab, args.hidden, args.seed, "check")
    l_dense, (g_dense,) = _run("dense", x, args.chunk_size, args.fused_chunk_size)
    l_chunk, (g_chunk,) = _run("chunked", x, args.chunk_size, args.fused_chunk_size)
    res = {
        "chunked_loss_rel_err": abs(l_chunk - l_dense) / abs(l_dense),
        "chunked_grad_rel_err": _rel(g_chunk, g_dense),
    }
    del g_dense, g_chunk, x["s"]
    l_dh, (gh_d, gw_d) = _run("dense_hidden", x, args.chunk_size, args.fused_chunk_size)
    gh_d, gw_d = gh_d.clone(), gw_d.clone()
    l_f, (gh_f, gw_f) = _run("fused", x, args.chunk_size, args.fused_chunk_size)
    res["fused_loss_rel_err"] = abs(l_f - l_dh) / abs(l_dh)
    res["fused_grad_rel_err"] = max(_rel(gh_f, gh_d), _rel(gw_f, gw_d))
    del gh_f, gw_f, gh_d, gw_d, x
    res.update(float64_errors(args.vocab, args.check_tokens, args.hidden, args.chunk_size,
                              args.fused_chunk_size))  # fmt: skip
    print(json.dumps(res))


def _row_rel(a, ref) -> float:
    d = (a.double() - ref).abs()
    return float((d.amax(-1) / ref.abs().amax(-1).clamp_min(1e-300)).max())


def _scale_rel(a, ref) -> float:
    return float((a.double() - ref).abs().max() / ref.abs().max())


def float64_errors(vocab: int, tokens: int, hidden: int, chunk: int, fused_chunk: int) -> dict:
    """Loss and gradient errors of every path against the float64 reference (tests/reference)."""

    sys.path.insert(0, str(REPO / "tests"))
    from reference.kd_reference import ref_kd_loss

    x = _inputs(tokens, vocab, hidden, 1, "check")
    h64, w64 = x["h"].double().requires_grad_(), x["w"].double().requires_grad_()
    z64 = h64 @ w64.T  # (N, V)
    z64.retain_grad()
    ref = ref_kd_loss(z64, x["t"].double(), x["y"], **LOSS_KW)["total"]
    ref.backward()
    s64 = x["s"].double().requires_grad_()
    ref_s = ref_kd_loss(s64, x["t"].double(), x["y"], **LOSS_KW)["total"]
    ref_s.backward()
    out = {}
    for v in ("dense", "chunked"):
        loss, (g,) = _run(v, {**x, "s": x["s"].clone()}, chunk, fused_chunk)
        out[v] = {"loss_rel": abs(loss - float(ref_s)) / abs(float(ref_s)),
                  "grad_rel": _row_rel(g, s64.grad)}  # fmt: skip
    for v in ("dense_hidden", "fused"):
        loss, (gh, gw) = _run(v, {**x, "h": x["h"].clone(), "w": x["w"].clone()}, chunk, fused_chunk)
        out[v] = {"loss_rel": abs(loss - float(ref)) / abs(float(ref)),
                  "grad_rel": max(_row_rel(gh, h64.grad), _scale_rel(gw, w64.grad)),
                  "lm_head_row_rel": _row_rel(gw, w64.grad)}  # fmt: skip
    worst = max(r["grad_rel"] for k, r in out.items() if k in ("chunked", "fused"))
    return {"float64_reference": {"vocab": vocab, "tokens": tokens, **out},
            "float64_reference_rel_err": max(r["loss_rel"] for r in out.values()),
            "float64_grad_rel_err_chunked_fused": worst}  # fmt: skip


def _spawn(
    mode: str, variant: str | None, args: argparse.Namespace, vocab: int, tokens: int
) -> dict:
    cmd = [sys.executable, __file__, f"--{mode}", *([variant] if variant else []), "--vocab", str(vocab),
           "--tokens", str(tokens), "--hidden", str(args.hidden), "--chunk-size", str(args.chunk_size),
           "--fused-chunk-size", str(args.fused_chunk_size),
           "--check-tokens", str(args.check_tokens)]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, vocab: int, tokens: int) -> dict:
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))  # alternate
        for v in order:
            runs[v].append(_spawn("worker", v, args, vocab, tokens))
            print(f"  vocab {vocab} repeat {r + 1}: {v:12s} {runs[v][-1]['seconds']:7.3f} s "
                  f"{runs[v][-1]['peak_bytes'] / 2**20:8.1f} MiB", flush=True)  # fmt: skip
    med = {v: {"seconds": statistics.median(x["seconds"] for x in rs),
               "peak_mib": statistics.median(x["peak_bytes"] for x in rs) / 2**20} for v, rs in runs.items()}  # fmt: skip
    out = {"vocab": vocab, "tokens": tokens, "median": med}
    for fast, slow in (("chunked", "dense"), ("fused", "dense_hidden"), ("sparse", "sft")):
        out[f"{fast}_memory_ratio"] = med[fast]["peak_mib"] / med[slow]["peak_mib"]
        out[f"{fast}_time_ratio"] = med[fast]["seconds"] / med[slow]["seconds"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--tokens", type=int, default=2048, help="docs/design.md §8: ≥ 2048")
    p.add_argument(
        "--hidden", type=int, default=576, help="student hidden size (SmolLM2-135M: 576)"
    )
    p.add_argument(
        "--chunk-size", type=int, default=0, help="tokens per chunk; 0 = default_chunk_size"
    )
    p.add_argument(
        "--fused-chunk-size", type=int, default=0,
        help="tokens per chunk of the fused path; 0 = default_fused_chunk_size",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large-vocab", type=int, default=151936, help="second vocab (0 = skip)")
    p.add_argument("--large-tokens", type=int, default=512, help="tokens at the large vocab")
    p.add_argument("--check-tokens", type=int, default=128, help="tokens of the float64 check")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from spectrumkd.losses import default_chunk_size, default_fused_chunk_size

    if args.quick:
        args.vocab, args.tokens, args.hidden, args.large_vocab = 4096, 512, 64, 4749
        args.large_tokens, args.check_tokens = 128, 16
    if args.chunk_size == 0:
        args.chunk_size = default_chunk_size(args.vocab)
    if args.fused_chunk_size == 0:
        args.fused_chunk_size = default_fused_chunk_size(args.vocab)
    if args.worker:
        return worker(args)
    if args.check:
        return check(args)
    started = time.perf_counter()
    results = [measure(args, args.vocab, args.tokens)]
    checks = _spawn("check", None, args, args.vocab, args.tokens)
    print("  correctness:", json.dumps(checks), flush=True)
    large_checks = None
    if args.large_vocab:
        large = argparse.Namespace(**vars(args))
        large.chunk_size = default_chunk_size(args.large_vocab)
        large.fused_chunk_size = default_fused_chunk_size(args.large_vocab)
        results.append(measure(large, args.large_vocab, args.large_tokens))
        large.check_tokens = max(8, args.check_tokens // 4)
        large_checks = _spawn("check", None, large, args.large_vocab, args.large_tokens)
        print("  correctness at the large vocab:", json.dumps(large_checks), flush=True)
    for r in results:
        print(f"vocab {r['vocab']} × {r['tokens']} tokens: " + ", ".join(
            f"{v} {m['seconds']:.2f} s {m['peak_mib']:.0f} MiB" for v, m in r["median"].items()))
    main_r = results[0]
    summary = {
        "benchmark": "kd_loss",
        "device": "cpu",
        "dtype": "float32",
        "loss": LOSS_KW,
        "chunk_size": args.chunk_size,
        "fused_chunk_size": args.fused_chunk_size,
        "hidden": args.hidden,
        "results": results,
        **checks,
        "large_vocab_checks": large_checks,
        "teacher_cache": {"k": TOPK, "bytes_per_token": CACHE_BYTES_PER_TOKEN,
                          "vs_full_bf16": {r["vocab"]: CACHE_BYTES_PER_TOKEN / (2 * r["vocab"])
                                           for r in results},
                          "cached_over_sft_loss_time": {r["vocab"]: r["sparse_time_ratio"]
                                                        for r in results}},
        "targets": {
            "chunked_memory_le_0.20": main_r["chunked_memory_ratio"] <= 0.20,
            "fused_memory_le_0.20": main_r["fused_memory_ratio"] <= 0.20,
            "chunked_time_le_1.35": main_r["chunked_time_ratio"] <= 1.35,
            "fused_time_le_1.35": main_r["fused_time_ratio"] <= 1.35,
            "loss_rel_err_le_1e-5": max(
                checks["chunked_loss_rel_err"], checks["fused_loss_rel_err"]
            )
            <= 1e-5,
            "grad_rel_err_le_1e-4": max(
                checks["chunked_grad_rel_err"], checks["fused_grad_rel_err"]
            )
            <= 1e-4,
            "float64_grad_rel_err_le_2e-5": checks["float64_grad_rel_err_chunked_fused"] <= 2e-5,
        },
        "wall_seconds": time.perf_counter() - started,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
