"""``benchmarks/bench_throughput.py --quick`` runs every variant on a tiny student and ends with one JSON line.

The full run's ratios (grouped vs random batches, ours vs TRL) are measured on a quiet machine and
written in docs/scaling.md; this keeps the script itself known to work, never asserting a time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_throughput.py"


def test_bench_throughput_quick_exits_0_with_one_json_line():
    pytest.importorskip("trl", reason="the TRL variant needs trl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    last, detail = json.loads(lines[-1]), json.loads(lines[-2])
    for key in ("grouped_vs_random_tokens_per_s", "time_vs_trl_distillation", "memory_vs_trl_distillation"):
        assert last[key] > 0
    assert last["trl_setting"]["loss_top_k"] == 64 and last["trl_setting"]["beta"] == 0.0
    runs = detail["runs"]
    # the same rows each epoch, the same batches for ours_random and TRL, and less padding grouped
    assert sum(runs["ours_grouped"][0]["real_tokens"]) == sum(runs["ours_random"][0]["real_tokens"])
    assert runs["trl"][0]["real_tokens"] == runs["ours_random"][0]["real_tokens"]
    assert runs["ours_grouped"][0]["padded_share"] > runs["ours_random"][0]["padded_share"]
    # the same weights, first batch and objective (forward KL on the top-64 support): the same loss
    assert runs["trl"][0]["first_loss"] == pytest.approx(runs["ours_random"][0]["first_loss"], rel=1e-4)
