"""spectrumkd's KD loss against its peers (TRL dense, TRL chunked, Liger chunked), time and memory.

Run: ``.venv/bin/python benchmarks/bench_peers.py`` (about 10-15 minutes on the shared 2-core CPU:
54 fresh subprocesses, five of the variants compile; ``--quick`` for a smoke run, ``--vocabs 49152``
for one size). Needs ``trl`` and ``liger-kernel`` (``pip install trl liger-kernel``); a peer that
does not import is listed as not installed, with the import error, and left out of the ratios.

The problem, the same for every variant (the issue's setting): a student's last hidden states
``h (N, 576)`` and LM head ``w (V, 576)``, a teacher's hidden states ``ht (N, 576)`` and LM head
``wt (V, 576)``, labels with 5% masked; the loss is the generalised JSD at β = 0.5, τ = 1, no CE
term, averaged over unmasked tokens; forward + backward to ``h`` and ``w``. Sizes: vocab 49,152 ×
2,048 tokens, and vocab 151,936 (Qwen2.5) × 512 tokens (fewer tokens so that TRL's dense path,
~10 float32 ``N × V`` tensors, stays under ~4 GB per subprocess; the machine runs an experiment too).

Variants:
- ``spectrumkd_fused``           :func:`spectrumkd.losses.fused_kd_loss` from both hidden states;
- ``spectrumkd_fused_compiled``  the same with ``compiled=True`` (``torch.compile`` per chunk);
- ``spectrumkd_fused_compiled_c64``, ``_c128``  the same at 64 and 128 tokens per chunk;
- ``spectrumkd_chunked_compiled`` logits built by autograd (``h @ w.T``, teacher under no_grad),
  then :func:`~spectrumkd.losses.chunked_kd_loss` with ``compiled=True``;
- ``trl_dense``     TRL ``GKDTrainer.generalized_jsd_loss`` on the same autograd logits;
- ``trl_chunked``   TRL ``DistillationTrainer``'s chunked loss, ``_chunked_divergence_loss``
  (``trl.kernels.chunked_divergence``, torch tiles on CPU);
- ``liger_eager``, ``liger_compiled``  ``LigerFusedLinearJSDLoss`` (``weight_hard_loss=0``,
  ``weight_soft_loss=1``) with ``compiled=False/True``, ``chunk_size=256`` (its default 1024 is
  ~2× the memory at the same speed on this CPU).

Measurement: each run is a fresh subprocess (``OMP_NUM_THREADS=1``; glibc's mmap threshold pinned
to 128 KiB so freed tensor buffers go back to the OS). It builds the inputs, runs one warm-up
forward + backward (for the compiled variants on the full problem, so that the timed run is a
steady-state training step and compilation is not timed; for the eager ones on 256 tokens), then
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and
times one forward + backward on all tokens. Peak memory is ``VmHWM − RSS before``: what the loss
allocates at its peak including the gradients it returns, excluding the inputs. Variants alternate
within each repeat (order reversed every other repeat); medians over ``--repeats`` (≥ 3). The
machine is shared (another process keeps ~1 of its 2 cores busy), so absolute times drift; the
alternation makes the *ratios* fair, and only ratios within one run are meaningful.

Correctness: one more subprocess runs every variant on a smaller problem (the same vocabulary,
``--check-tokens`` tokens) and compares the losses and both gradients with each other and with the
float64 reference of ``tests/reference`` (max |Δ| / max |reference|).

Output: a table, then one JSON line:
``{"vocab_49152": {"time_vs_fastest_peer", "memory_vs_leanest_peer", "fastest_peer",
"leanest_peer"}, "vocab_151936": {...}}``; each ratio is our best path over that peer, where "our
best" is the spectrumkd variant closest to the target (time ≤ 1× the fastest peer and memory ≤ 0.5×
the leanest peer: the smallest ``max(time ratio, 2 × memory ratio)``); it is named on the line
before, with every median.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from procmem import hwm_kib, rss_kib

REPO = Path(__file__).resolve().parents[1]
# Our compiled fused path at three chunk sizes: the default (default_fused_chunk_size: a ~32 MiB
# float32 chunk buffer, 170 tokens at 49,152, 55 at 151,936) and fixed 64 and 128 tokens — smaller
# chunks trade LM-head matmul speed for memory (every chunk reads both whole heads).
LEAN_CHUNKS = (64, 128)
OURS = ("spectrumkd_fused", "spectrumkd_fused_compiled",
        *(f"spectrumkd_fused_compiled_c{c}" for c in LEAN_CHUNKS), "spectrumkd_chunked_compiled")
PEERS = ("trl_dense", "trl_chunked", "liger_eager", "liger_compiled")
VARIANTS = OURS + PEERS
BETA = 0.5
LIGER_CHUNK = 256
DEFAULT_TOKENS = {49152: 2048, 151936: 512}




def _inputs(tokens: int, vocab: int, hidden: int, seed: int, dtype=None) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g).mul_(2.0 / hidden**0.5)
    ht = torch.randn(tokens, hidden, generator=g)
    wt = torch.randn(vocab, hidden, generator=g).mul_(2.0 / hidden**0.5)
    y = torch.randint(0, vocab, (tokens,), generator=g)
    y[torch.rand(tokens, generator=g) < 0.05] = -100
    out = {"h": h, "w": w, "ht": ht, "wt": wt, "y": y}
    if dtype is not None:
        out = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in out.items()}
    return out


def _import_error(variant: str) -> str | None:
    """None if the variant's library imports, else the error (one line)."""
    try:
        _loss_fn(variant)
    except Exception as err:
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def _loss_fn(variant: str):
    """A function ``(h, w, ht, wt, y) -> scalar loss`` for ``variant`` (imports its library)."""
    import torch

    if variant.startswith("spectrumkd"):
        from spectrumkd.losses import chunked_kd_loss, fused_kd_loss

        kw = dict(divergence="jsd", teacher_weight=BETA, temperature=1.0, ce_weight=0.0)
        if variant == "spectrumkd_chunked_compiled":

            def ours_chunked(h, w, ht, wt, y):
                with torch.no_grad():
                    t = ht @ wt.T  # (N, V)
                return chunked_kd_loss(h @ w.T, t, y, compiled=True, **kw).total

            return ours_chunked
        compiled = variant.startswith("spectrumkd_fused_compiled")
        lean = re.fullmatch(r"spectrumkd_fused_compiled_c(\d+)", variant)
        chunk = int(lean.group(1)) if lean else None  # None: default_fused_chunk_size

        def ours_fused(h, w, ht, wt, y):
            return fused_kd_loss(h, w, y, teacher_hidden=ht, teacher_lm_head_weight=wt,
                                 compiled=compiled, chunk_size=chunk, **kw).total  # fmt: skip

        return ours_fused
    if variant == "trl_dense":
        from trl.experimental.gkd import GKDTrainer

        def trl_dense(h, w, ht, wt, y):
            with torch.no_grad():
                t = ht @ wt.T
            return GKDTrainer.generalized_jsd_loss((h @ w.T)[None], t[None], y[None], beta=BETA)

        return trl_dense
    if variant == "trl_chunked":
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        def trl_chunked(h, w, ht, wt, y):
            mask = (y != -100)[None]
            return _chunked_divergence_loss(h[None], ht[None], w, wt, mask, beta=BETA)[0]

        return trl_chunked
    if variant.startswith("liger"):
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=BETA,
                                     temperature=1.0, compiled=variant == "liger_compiled",
                                     chunk_size=LIGER_CHUNK)  # fmt: skip

        def liger(h, w, ht, wt, y):
            return fn(h, w, ht, wt, y)

        return liger
    raise ValueError(variant)


def _step(fn, x: dict, rows: slice | None = None):
    h = x["h"] if rows is None else x["h"][rows]
    ht = x["ht"] if rows is None else x["ht"][rows]
    y = x["y"] if rows is None else x["y"][rows]
    h = h.detach().requires_grad_()
    w = x["w"].detach().requires_grad_()
    loss = fn(h, w, ht, x["wt"], y)
    loss.backward()
    return float(loss.detach()), h.grad, w.grad


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    fn = _loss_fn(args.worker)
    x = _inputs(args.tokens, args.vocab, args.hidden, args.seed)
    # Warm-up. Compiled variants: the full problem, so the timed run is a steady-state step (Liger's
    # compiled chunk function guards on the total token count and would recompile otherwise).
    # Eager variants: 256 tokens, enough for torch's one-time initialisation.
    _step(fn, x, None if "compiled" in args.worker else slice(0, min(256, args.tokens)))
    base = rss_kib()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    loss, gh, gw = _step(fn, x)
    seconds = time.perf_counter() - start
    peak = (hwm_kib() - base) * 1024
    del gh, gw
    print(json.dumps({"variant": args.worker, "seconds": seconds, "peak_bytes": peak,
                      "loss": loss}))  # fmt: skip


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check(args: argparse.Namespace) -> None:
    """Losses and gradients of every installed variant vs each other and the float64 reference."""

    sys.path.insert(0, str(REPO / "tests"))
    from reference.kd_reference import ref_kd_loss

    x = _inputs(args.tokens, args.vocab, args.hidden, args.seed)
    h64, w64 = x["h"].double().requires_grad_(), x["w"].double().requires_grad_()
    t64 = x["ht"].double() @ x["wt"].double().T
    ref = ref_kd_loss(h64 @ w64.T, t64, x["y"], divergence="jsd", teacher_weight=BETA,
                      ce_weight=0.0)["total"]  # fmt: skip
    ref.backward()
    del t64
    out, grads = {}, {}
    for v in args.variants:
        loss, gh, gw = _step(_loss_fn(v), x)
        grads[v] = (gh, gw)
        out[v] = {"loss_rel_err_vs_float64": abs(loss - float(ref)) / abs(float(ref)),
                  "grad_rel_err_vs_float64": max(_rel(gh, h64.grad), _rel(gw, w64.grad))}  # fmt: skip
    first = args.variants[0]
    for v in args.variants:
        out[v][f"grad_rel_err_vs_{first}"] = max(
            _rel(grads[v][0], grads[first][0]), _rel(grads[v][1], grads[first][1])
        )
    print(json.dumps(out))


def _spawn(mode: str, variant: str | None, args, vocab: int, tokens: int, variants=()) -> dict:
    cmd = [sys.executable, __file__, f"--{mode}", *([variant] if variant else []),
           "--vocabs", str(vocab), "--tokens", str(tokens), "--hidden", str(args.hidden),
           "--seed", str(args.seed), *(["--variants", *variants] if variants else [])]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src"), "TRL_EXPERIMENTAL_SILENCE": "1",
           "PYTHONWARNINGS": "ignore"}  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {variant} at vocab {vocab} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, vocab: int, tokens: int, variants: list[str]) -> dict:
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            res = _spawn("worker", v, args, vocab, tokens)
            runs[v].append(res)
            print(f"  vocab {vocab} × {tokens} tokens, repeat {r + 1}: {v:28s} "
                  f"{res['seconds']:7.2f} s {res['peak_bytes'] / 2**20:8.1f} MiB", flush=True)  # fmt: skip
    return {v: {"seconds": statistics.median(x["seconds"] for x in rs),
                "peak_mib": statistics.median(x["peak_bytes"] for x in rs) / 2**20,
                "loss": rs[0]["loss"]} for v, rs in runs.items()}  # fmt: skip


def summarize(med: dict) -> dict:
    """Ratios of our best variant over the fastest and the leanest installed peer."""
    peers = [v for v in PEERS if v in med]
    ours = [v for v in OURS if v in med]
    fastest = min(peers, key=lambda v: med[v]["seconds"])
    leanest = min(peers, key=lambda v: med[v]["peak_mib"])

    def ratios(v):
        return (med[v]["seconds"] / med[fastest]["seconds"],
                med[v]["peak_mib"] / med[leanest]["peak_mib"])  # fmt: skip

    best = min(ours, key=lambda v: max(ratios(v)[0], 2.0 * ratios(v)[1]))
    t, m = ratios(best)
    return {"our_best": best, "time_vs_fastest_peer": round(t, 3),
            "memory_vs_leanest_peer": round(m, 3), "fastest_peer": fastest,
            "leanest_peer": leanest, "target_met": t <= 1.0 and m <= 0.5}  # fmt: skip


def _table(vocab: int, tokens: int, med: dict) -> str:
    fast = min(r["seconds"] for r in med.values())
    lines = [f"vocab {vocab}, {tokens} tokens (medians):",
             f"  {'variant':28s} {'time s':>8s} {'× fastest':>9s} {'peak MiB':>9s}"]  # fmt: skip
    for v, r in sorted(med.items(), key=lambda kv: kv[1]["peak_mib"]):
        lines.append(f"  {v:28s} {r['seconds']:8.2f} {r['seconds'] / fast:9.2f} "
                     f"{r['peak_mib']:9.1f}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vocabs", type=int, nargs="+", default=[49152, 151936])
    p.add_argument("--tokens", type=int, default=0,
                   help="tokens per step; 0 = 2048 at 49152, 512 at 151936")  # fmt: skip
    p.add_argument("--hidden", type=int, default=576, help="hidden size (SmolLM2-135M: 576)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check-tokens", type=int, default=128)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the script")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.worker:
        args.vocab = args.vocabs[0]
        return worker(args)
    if args.check:
        args.vocab = args.vocabs[0]
        return check(args)
    if args.quick:
        args.hidden, args.check_tokens = 32, 32
    started = time.perf_counter()
    missing = {v: e for v in args.variants if (e := _import_error(v))}
    for v, e in missing.items():
        print(f"  {v}: not installed ({e})", flush=True)
    variants = [v for v in args.variants if v not in missing]
    if not any(v in PEERS for v in variants) or not any(v in OURS for v in variants):
        raise SystemExit("bench_peers needs at least one spectrumkd variant and one peer")
    summary, details = {}, {}
    for vocab in args.vocabs:
        tokens = args.tokens or DEFAULT_TOKENS.get(vocab, 1024)
        if args.quick:
            vocab, tokens = vocab // 64, 1024
        med = measure(args, vocab, tokens, variants)
        checks = _spawn("check", None, args, vocab, args.check_tokens, variants)
        print(_table(vocab, tokens, med))
        print("  gradients on", args.check_tokens, "tokens:", json.dumps(checks), flush=True)
        s = summarize(med)
        details[f"vocab_{vocab}"] = {"tokens": tokens, "median": med, "check": checks, **s}
        summary[f"vocab_{vocab}"] = {k: s[k] for k in ("time_vs_fastest_peer",
                                                       "memory_vs_leanest_peer", "fastest_peer",
                                                       "leanest_peer")}  # fmt: skip
    print(json.dumps({"benchmark": "peers", "hidden": args.hidden, "repeats": args.repeats,
                      "not_installed": missing, "wall_seconds": time.perf_counter() - started,
                      **details}))  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
