"""How cached (top-k) KD targets constrain the student's tail: a toy where the answer is known.

Run: ``.venv/bin/python benchmarks/bench_sparse_tail.py`` (about a minute on one core; ``--steps 40``
for a smoke run). The toy of issue 17: 64 positions, vocabulary 256, teacher logits ~ N(0, 3²), the
teacher's top-16 cached, pure KD (``ce_weight = 0``, fkl) from zero student logits, Adam (lr 0.1)
for 400 steps, the student's logits being the free parameters. Each way of using the cache is
trained side by side on the same teacher, and reported by what it does to the whole distribution:

- ``dense``        ``kd_loss`` on the full teacher logits (what the cache approximates);
- ``bucket``       ``sparse_kd_loss`` with the tail bucket (the default): k ids + one tail outcome;
- ``conditional``  ``sparse_kd_loss(tail="none")``: both distributions conditioned on the top-k;
- ``sampled``      Anshumann et al. 2025's random-sampling KD with a *cache*: 16 ids drawn once per
                   position from the teacher (with replacement), the target their empirical
                   frequencies, the student's full softmax (``−Σ w·log q``). Unbiased over fresh
                   draws; a cache draws once.

Per variant: the full-vocabulary KL(teacher‖student) at the end as a fraction of its start, and
the mean |q(S) − p(S)| over positions (S = the teacher's top-16). Then the same at τ = 2 (targets
re-tempered from the τ = 1 cache), KL measured at τ = 1. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from spectrumkd.losses import kd_loss, sparse_kd_loss, topk_teacher

POSITIONS, VOCAB, K, SCALE, LR = 64, 256, 16, 3.0, 0.1


def full_kl(teacher: torch.Tensor, student: torch.Tensor) -> float:
    lp, lq = torch.log_softmax(teacher.double(), -1), torch.log_softmax(student.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def mass_gap(teacher: torch.Tensor, student: torch.Tensor, ids: torch.Tensor) -> float:
    p = torch.softmax(teacher.double(), -1).gather(-1, ids).sum(-1)
    q = torch.softmax(student.double(), -1).gather(-1, ids).sum(-1)
    return float((p - q).abs().mean())


def losses(teacher: torch.Tensor, tau: float, seed: int):
    """``{variant: loss(student_logits)}`` for the toy's teacher."""
    labels = torch.zeros(POSITIONS, dtype=torch.long)  # CE weight 0: labels only set the mask
    ids, lp = topk_teacher(teacher, K)
    kw = dict(divergence="fkl", ce_weight=0.0, temperature=tau)
    draws = torch.multinomial(torch.softmax(teacher, -1), K, replacement=True,
                              generator=torch.Generator().manual_seed(seed))
    weights = torch.zeros_like(teacher).scatter_add_(-1, draws, torch.full(draws.shape, 1.0 / K))
    return {
        "dense": lambda s: kd_loss(s, teacher, labels, **kw).total,
        "bucket": lambda s: sparse_kd_loss(s, ids, lp, labels, **kw).total,
        "conditional": lambda s: sparse_kd_loss(s, ids, lp, labels, tail="none", **kw).total,
        "sampled": lambda s: -(weights * torch.log_softmax(s / tau, -1)).sum(-1).mean() * tau**2,
    }, ids


def run(steps: int, tau: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(POSITIONS, VOCAB, generator=g) * SCALE
    fns, ids = losses(teacher, tau, seed)
    start = full_kl(teacher, torch.zeros(POSITIONS, VOCAB))
    out = {}
    for name, fn in fns.items():
        student = torch.zeros(POSITIONS, VOCAB, requires_grad=True)
        opt = torch.optim.Adam([student], lr=LR)
        for _ in range(steps):
            opt.zero_grad()
            fn(student).backward()
            opt.step()
        s = student.detach()
        out[name] = {"kl_end_over_start": round(full_kl(teacher, s) / start, 4),
                     "kl_end": round(full_kl(teacher, s), 4),
                     "mass_gap_on_topk": round(mass_gap(teacher, s, ids), 4)}
    out["kl_start"] = round(start, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {}
    for tau in (1.0, 2.0):
        r = run(args.steps, tau, args.seed)
        result[f"tau_{tau:g}"] = r
        print(f"τ = {tau:g}: full KL at start {r['kl_start']:.3f} nats")
        print(f"  {'variant':12s} {'KL end/start':>13s} {'KL end':>8s} {'|q(S) − p(S)|':>14s}")
        for name in ("dense", "bucket", "conditional", "sampled"):
            v = r[name]
            print(f"  {name:12s} {v['kl_end_over_start']:13.4f} {v['kl_end']:8.4f} {v['mass_gap_on_topk']:14.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
