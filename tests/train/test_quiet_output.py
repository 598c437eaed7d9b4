"""A smoke run's output is its own bars and lines: no tokenizer length warning for rows that are
dropped anyway, no "Writing model shards" bars cutting through the training bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_smoke_run_prints_no_foreign_warnings_or_bars(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "distill", "--config", str(REPO / "configs" / "smoke.yaml"),
         "--output-dir", str(tmp_path / "run"), "data.limit=40"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "Writing model shards" not in output
    assert "Token indices sequence length" not in output
    assert "distill:" in proc.stderr  # the training bar itself is still there
