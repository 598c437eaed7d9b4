"""Planning time for 10^6 log-normal scores (docs/design.md §8: < 1 s).

Times ``make_plan`` (spectrum sort, zones, adaptive windows, τ, per-epoch id lists) with the paper's
defaults, median of 3, and — once, for information — reading the scores file and writing the plan
JSON through the real ``spectrumkd plan`` command. Last stdout line: one JSON object.

    python benchmarks/bench_plan.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spectrumkd.curriculum import make_plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cli", action="store_true", help="skip the end-to-end CLI timing")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    scores = rng.lognormal(0.7, 0.45, args.n)
    ids = [f"dolly-{i}" for i in range(args.n)]
    results = {}
    for step in ("adaptive", "linear"):
        times, plan = [], None
        for _ in range(args.repeats):
            del plan  # freeing the previous plan is not planning work
            t0 = time.perf_counter()
            plan = make_plan("spectrumkd", ids, scores, epochs=25, warmup=5, step=step)
            times.append(time.perf_counter() - t0)
        results[step] = statistics.median(times)
        print(f"make_plan {step:<8} n={args.n}: median {results[step]:.3f} s over {args.repeats}")
    auto_t0 = time.perf_counter()
    make_plan("spectrumkd", ids, scores, lambda_a="auto", lambda_b="auto")
    auto_s = time.perf_counter() - auto_t0
    print(f"make_plan with --lambda auto: {auto_s:.3f} s")
    assert plan.subset_sizes() == [args.n - 2 * (args.n // 10)] * 25

    cli = {}
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as d:
            sp = Path(d) / "scores.jsonl"
            with sp.open("w") as f:
                f.write('{"spectrumkd": "scores", "metric": "ce"}\n')
                f.writelines(f'{{"id": "{i}", "score": {s!r}}}\n' for i, s in zip(ids, scores.tolist()))
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "spectrumkd.cli", "plan", "--scores", str(sp),
                                "--out", str(Path(d) / "plan.json")], capture_output=True, text=True)
            cli["cli_total_seconds"] = round(time.perf_counter() - t0, 3)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            planned = [ln for ln in r.stdout.splitlines() if ln.startswith("planned in")]
            cli["cli_planning_seconds"] = float(planned[0].split()[2])
            cli["plan_json_mb"] = round((Path(d) / "plan.json").stat().st_size / 2**20, 1)
        print(f"spectrumkd plan end to end: {cli}")

    target = 1.0
    print(json.dumps({
        "benchmark": "plan", "n": args.n, "epochs": 25,
        "plan_seconds_adaptive": round(results["adaptive"], 4),
        "plan_seconds_linear": round(results["linear"], 4),
        "plan_seconds_auto_lambda": round(auto_s, 4),
        "target_seconds": target,
        "ratio_to_target": round(results["adaptive"] / target, 3),
        "met": results["adaptive"] < target and results["linear"] < target,
        **cli,
    }))


if __name__ == "__main__":
    main()
