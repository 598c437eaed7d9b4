"""``spectrumkd plan``: scores file → plan file, with a short human summary. Never imports torch."""

from __future__ import annotations

import argparse
import time
import warnings

HELP = "Build a curriculum plan (SpectrumKD sliding window or a baseline) from a scores file."


def _lambda(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH such as 0.1:0.9, got {text!r}") from None
    return low, high


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spectrumkd.curriculum import DIRECTIONS, KINDS, STEPS

    p.add_argument("--scores", required=True, help="scores JSON Lines file (header optional)")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.add_argument("--epochs", type=int, default=25, help="number of epochs n (default 25)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up epochs k (default 5)")
    p.add_argument("--lambda-a", type=_lambda, default=0.1, help="early/late zone share λa")
    lam = p.add_mutually_exclusive_group()
    lam.add_argument("--lambda-b", type=_lambda, default=0.1, help="excluded zone share λb")
    lam.add_argument("--lambda", dest="lambda_mode", choices=["auto"],
                     help="auto: λa and λb from a log-normal fit of the scores")
    p.add_argument("--step", default="adaptive", help=f"window step: {' | '.join(STEPS)}")
    p.add_argument("--direction", default="forward", help=f"{' | '.join(DIRECTIONS)}")
    p.add_argument("--tau0", type=float, default=1.0, help="temperature at epoch 1 (default 1)")
    p.add_argument("--taun", type=float, default=2.0, help="temperature at epoch n (default 2)")
    p.add_argument("--temperature-schedule", default="linear", choices=["linear", "constant"],
                   help="constant keeps τ0 throughout")
    p.add_argument("--baseline", choices=[k for k in KINDS if k != "spectrumkd"],
                   help="build a baseline plan instead of the SpectrumKD window")
    p.add_argument("--static-range", type=_band, default=(0.0, 0.8), metavar="LOW:HIGH",
                   help="static baseline band of the sorted spectrum (default 0.0:0.8)")
    p.add_argument("--buckets", type=_positive, default=3, help="TCL buckets (default 3)")
    p.add_argument("--epochs-per-stage", type=int, default=None,
                   help="TCL epochs per stage (default: split the epochs evenly)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spectrumkd import SpectrumKDError
    from spectrumkd.curriculum import PoorFitWarning, make_plan, read_scores

    if Path(args.out).is_dir():
        raise SpectrumKDError(f"--out {args.out}: is a directory; name the plan file, e.g. "
                              f"{Path(args.out) / 'plan.json'}")
    scores = read_scores(args.scores)
    auto = args.lambda_mode == "auto"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoorFitWarning)
        plan = make_plan(
            args.baseline or "spectrumkd", scores.ids, scores.scores,
            epochs=args.epochs, warmup=args.warmup,
            lambda_a="auto" if auto else args.lambda_a,
            lambda_b="auto" if auto else args.lambda_b,
            step=args.step, direction=args.direction, tau0=args.tau0, taun=args.taun,
            temperature_schedule=args.temperature_schedule,
            static_low=args.static_range[0], static_high=args.static_range[1],
            buckets=args.buckets, epochs_per_stage=args.epochs_per_stage,
        )
    plan_seconds = time.perf_counter() - t0
    plan.params["scores_file"] = str(args.scores)
    if scores.header:
        plan.params["scores_header"] = scores.header
    plan.save(args.out)
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
    lam = f"λa = {p['lambda_a']:.4g}, λb = {p['lambda_b']:.4g}"
    if p.get("lambda_auto"):
        lam += (f" (auto: log-normal μ = {p['fit_mu']:.3f}, σ = {p['fit_sigma']:.3f}, "
                f"KS = {p['fit_ks']:.3f})")
    lines.append(lam)
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
