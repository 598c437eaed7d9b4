"""``benchmarks/gpu_check.py --dry-run`` runs on the CPU with tiny shapes and ends with one JSON line.

The GPU check is run only when a GPU machine is lent (for minutes); this keeps the script itself
known to work: every part (KD steps dense / fused / fused_compiled, scoring, bf16 vs fp32) runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_exits_0_with_one_json_line():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["dry_run"] is True and out["device"] == "cpu"
    assert out["ok"] is True, out
    for variant in ("dense", "fused", "fused_compiled"):
        step = out["kd_step"][variant]
        assert step["tokens_per_s"] > 0 and len(step["losses"]) == 2
    # dense and fused start from the same weights and batch: the same first loss
    assert out["first_loss_dense_vs_fused_rel"] <= 1e-3
    assert out["scoring"]["scores_finite"] and out["scoring"]["tokens_per_s"] > 0
    prec = out["precision"]
    assert prec["bf16_vs_fp32_rel"] <= prec["bf16_tolerance"]
    assert prec["fp32"]["kd"] > 1e-2  # the models are not near-uniform: the check tests something
