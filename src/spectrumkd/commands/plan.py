"""``spectrumkd plan``: scores file → plan file, with a short human summary. Never imports torch.

The plan options are the fields of :class:`spectrumkd.curriculum.PlanSpec` (their docstrings are
the help texts, their defaults the paper's); the plan itself is ``make_plan_from_spec``.
"""

from __future__ import annotations

import argparse
import time
import warnings

from spectrumkd.commands.options import add_field_options, fields_from_args, out_file

HELP = "Build a curriculum plan (SpectrumKD sliding window or a baseline) from a scores file."

# Spellings the options had before they were built from PlanSpec's fields.
ALIASES = {"kind": ("--baseline",), "warmup_epochs": ("--warmup",)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spectrumkd.curriculum.spec import PlanSpec

    p.add_argument("--scores", required=True, help="scores JSON Lines file (header optional)")
    p.add_argument("--out", required=True, help="plan JSON to write")
    add_field_options(p, PlanSpec, aliases=ALIASES)
    p.add_argument("--lambda", dest="auto_lambda", type=_auto, metavar="auto",
                   help="--lambda auto is --auto-lambda")


def _auto(text: str) -> bool:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"expected auto, got {text!r}")
    return True


def run(args: argparse.Namespace) -> int:
    from spectrumkd.curriculum import PlanSpec, PoorFitWarning, make_plan_from_spec, read_scores
    from spectrumkd.fileio import refuse_overlap

    out = out_file(args.out, what="plan file", example="plan.json")
    refuse_overlap({"--out": out}, {"--scores": args.scores})
    spec = PlanSpec(**fields_from_args(PlanSpec, args))
    scores = read_scores(args.scores)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoorFitWarning)
        plan = make_plan_from_spec(spec, scores.ids, scores.scores)
    plan_seconds = time.perf_counter() - t0
    plan.params["scores_file"] = str(args.scores)
    if scores.header:
        plan.params["scores_header"] = scores.header
    plan.save(out)
    print(summary(plan, scores.ids, scores.scores))
    for w in caught:
        print(f"warning: {w.message}")
    print(f"planned in {plan_seconds:.3f} s; wrote {args.out}")
    return 0


def summary(plan, ids, scores) -> str:
    """Zone sizes and score ranges, λ, window starts and subset difficulty per epoch."""
    score_of = dict(zip(ids, scores.tolist()))
    p = plan.params
    lines = [f"{p['curriculum']} plan: {plan.n_total} examples, {plan.num_epochs} epochs"]
    if p["curriculum"] == "spectrumkd":  # λ shapes only the sliding window's zones
        lam = f"λa = {p['lambda_a']:.4g}, λb = {p['lambda_b']:.4g}"
        if p.get("lambda_auto"):
            lam += (f" (auto: log-normal μ = {p['fit_mu']:.3f}, σ = {p['fit_sigma']:.3f}, "
                    f"KS = {p['fit_ks']:.3f})")
        lines.append(lam)
    elif "buckets" in p:  # TCL Baby Step / One-Pass
        lines.append(f"{p['buckets']} buckets, {p['epochs_per_stage']} epochs per stage")
    for zone, zone_ids in plan.zones.items():
        if zone_ids:
            vals = [score_of[i] for i in zone_ids]
            lines.append(f"  {zone:<11} {len(zone_ids):>8} examples  scores "
                         f"{min(vals):.4g} – {max(vals):.4g}")
        else:
            lines.append(f"  {zone:<11} {0:>8} examples")
    lines.append("  epoch  start   size    τ     total difficulty")
    for e in plan.epochs:
        lines.append(f"  {e.epoch:>5} {e.start:>6} {len(e.ids):>6}  {e.temperature:.3f}  "
                     f"{e.total_difficulty:.6g}")
    return "\n".join(lines)
