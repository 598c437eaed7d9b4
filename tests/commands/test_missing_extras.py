"""A base install (no torch): `score` and `distill` end in one line naming the `train` extra.

The missing torch is simulated in a subprocess by an import hook that refuses ``torch`` and
``transformers`` as an install without them would (``ModuleNotFoundError`` naming the module).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from spectrumkd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args", [
    ["score", "--model", "tiny-random:llama", "--data", "spectrumkd:dolly/train.jsonl",
     "--out", "run/scores.jsonl"],
    ["distill", "--config", "smoke.yaml", "--output-dir", "runs/smoke"],
])
def test_without_torch_one_line_names_the_train_extra(tmp_path, args):
    (tmp_path / "smoke.yaml").write_text("teacher: {spec: tiny-random:llama}\n")
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not installed" in proc.stderr and ".[train]" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_plan_needs_no_torch(tmp_path):
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(f'{{"id": {i}, "score": {i / 10}}}\n' for i in range(20)))
    proc = _run("plan", "--scores", str(scores), "--out", str(tmp_path / "plan.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
