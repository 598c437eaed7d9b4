"""`spectrumkd distill` end to end in a subprocess: the run directory of docs/design.md §7, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
SHRINK = ["data.limit=20", "validation.size=4", "validation.max_new_tokens=4",
          "optim.batch_size=4", "progress=false"]


def distill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spectrumkd.cli", "distill", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_smoke_config_writes_the_run_directory(shared_data, tmp_path):
    out = tmp_path / "run"
    proc = distill("--config", str(SMOKE), "--output-dir", str(out), *SHRINK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "dropped.jsonl", "scores.jsonl", "plan.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    for ckpt in ("last", "best"):
        assert (out / "checkpoints" / ckpt / "state.pt").is_file()
        assert (out / "checkpoints" / ckpt / "model" / "config.json").is_file()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["loss"]["ce_weight"] == 0.3 and config["optim"]["batch_size"] == 4
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    plan = json.loads((out / "plan.json").read_text())
    assert [(r["epoch"], r["subset_size"], r["temperature"]) for r in epochs] == [
        (e["epoch"], len(e["ids"]), e["temperature"]) for e in plan["epochs"]
    ]
    assert all("val_rougeL" in r for r in epochs)
    steps = [r for r in rows if r["kind"] == "step"]
    assert {"ce", "kd", "lr", "temperature", "tokens_per_s"} <= set(steps[0])
    curve = [r for r in rows if r["kind"] == "curve"]  # validation.curve_points: 4 by default
    assert curve[0]["step"] == 0 and curve[-1]["step"] == steps[-1]["step"]
    assert len(curve) == 5 and all(r["heldout_kl"] > 0 for r in curve)


def test_unknown_key_and_different_tokenizers_are_clear_errors(tmp_path):
    proc = distill("--config", str(SMOKE), "loss.divergense=rkl")
    assert proc.returncode == 2 and "did you mean 'loss.divergence'" in proc.stderr

    from spectrumkd.models import load_model, save_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens(["<extra-token>"])
    folder = save_model(load_model("tiny-random:llama?layers=1&hidden=32"), tmp_path / "other", tok)
    proc = distill("--config", str(SMOKE), "--output-dir", str(tmp_path / "r"), f"student.spec={folder}")
    assert proc.returncode == 2 and "tokenizers differ" in proc.stderr
