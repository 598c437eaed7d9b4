"""Peak memory and time of the KD loss (forward + backward): dense vs chunked vs fused, on CPU.

Run: ``.venv/bin/python benchmarks/bench_kd_loss.py`` (about 3.5 minutes on this quiet 2-core CPU;
``--quick`` for a smoke run). Defaults: vocab 49152 × 4096 tokens (the issue's size), then vocab
151936 × 512 tokens only if the first part finished within ``--budget`` seconds — at 4096 tokens it
does not (the first part takes ~200 s), so that part is skipped by default to stay under 5 minutes
(``--tokens 2048`` leaves time for it). Chunk sizes: ``default_chunk_size`` (chunked, ~4 MiB per
float32 chunk buffer) and ``default_fused_chunk_size`` (fused, ~32 MiB). Last stdout line: one JSON
object with the ratios and whether each DESIGN.md §8 target is met (memory ≤ 0.20× dense, time ≤
1.35× dense, loss rel. err ≤ 1e-5, gradient rel. err ≤ 1e-4).

Variants (objective: fkl, τ = 2, ce_weight = 0.3, 5% of labels masked, float32):
- ``dense``          ``kd_loss(student_logits, teacher_logits, labels)`` — plain autograd;
- ``chunked``        the same with ``chunk_size`` (analytic per-chunk gradients);
- ``dense_hidden``   ``kd_loss(hidden @ lm_head.T, teacher_logits, labels)`` — the logits built by
                     autograd from the student's hidden states (the fair baseline of the fused path);
- ``fused``          ``fused_kd_loss(hidden, lm_head, labels, teacher_logits=...)``.

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
error as ‖g − g_dense‖ / ‖g_dense‖), plus agreement with the float64 reference of
``tests/reference`` on a small problem.
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
VARIANTS = ("dense", "chunked", "dense_hidden", "fused")
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
    if need in ("dense", "chunked", "check"):
        out["s"] = torch.randn(tokens, vocab, generator=g).mul_(2.0)  # student logits (N, V)
    if need in ("dense_hidden", "fused", "check"):
        out["h"] = torch.randn(tokens, hidden, generator=g)
        out["w"] = torch.randn(vocab, hidden, generator=g).mul_(2.0 / hidden**0.5)
    return out


def _run(variant: str, x: dict, chunk: int, fused_chunk: int):
    """Forward + backward of one variant; returns (loss value, gradient tensors)."""

    from spectrumkd.losses import fused_kd_loss, kd_loss

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
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from reference.kd_reference import ref_kd_loss
    from spectrumkd.losses import fused_kd_loss, kd_loss

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
    # float64 reference on a small problem (the reference loops over tokens in Python)
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(64, 1000, generator=g) * 2, torch.randn(64, 1000, generator=g) * 2
    y = torch.randint(0, 1000, (64,), generator=g)
    ref = float(ref_kd_loss(s, t, y, **LOSS_KW)["total"])
    worst = 0.0
    for chunk in (None, 7):
        worst = max(
            worst, abs(float(kd_loss(s, t, y, chunk_size=chunk, **LOSS_KW).total) - ref) / abs(ref)
        )
    eye = torch.eye(1000)
    worst = max(
        worst,
        abs(float(fused_kd_loss(s, eye, y, teacher_logits=t, chunk_size=7, **LOSS_KW).total) - ref)
        / abs(ref),
    )
    res["float64_reference_rel_err"] = worst
    print(json.dumps(res))


def _spawn(
    mode: str, variant: str | None, args: argparse.Namespace, vocab: int, tokens: int
) -> dict:
    cmd = [sys.executable, __file__, f"--{mode}", *([variant] if variant else []), "--vocab", str(vocab),
           "--tokens", str(tokens), "--hidden", str(args.hidden), "--chunk-size", str(args.chunk_size),
           "--fused-chunk-size", str(args.fused_chunk_size)]  # fmt: skip
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
    for fast, slow in (("chunked", "dense"), ("fused", "dense_hidden")):
        out[f"{fast}_memory_ratio"] = med[fast]["peak_mib"] / med[slow]["peak_mib"]
        out[f"{fast}_time_ratio"] = med[fast]["seconds"] / med[slow]["seconds"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--tokens", type=int, default=4096, help="DESIGN §8: ≥ 2048; the issue: 4096")
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
    p.add_argument("--budget", type=float, default=170.0, help="skip the large vocab after this many s")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from spectrumkd.losses import default_chunk_size, default_fused_chunk_size

    if args.chunk_size == 0:
        args.chunk_size = default_chunk_size(args.vocab)
    if args.fused_chunk_size == 0:
        args.fused_chunk_size = default_fused_chunk_size(args.vocab)
    if args.worker:
        return worker(args)
    if args.check:
        return check(args)
    if args.quick:
        args.vocab, args.tokens, args.hidden, args.large_vocab = 4096, 512, 64, 0
    started = time.perf_counter()
    results = [measure(args, args.vocab, args.tokens)]
    checks = _spawn("check", None, args, args.vocab, args.tokens)
    print("  correctness:", json.dumps(checks), flush=True)
    if args.large_vocab and time.perf_counter() - started < args.budget:
        large = argparse.Namespace(**vars(args))
        large.chunk_size = default_chunk_size(args.large_vocab)
        large.fused_chunk_size = default_fused_chunk_size(args.large_vocab)
        results.append(measure(large, args.large_vocab, args.large_tokens))
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
        },
        "wall_seconds": time.perf_counter() - started,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
