"""`spectrumkd score` end to end in a subprocess, then `spectrumkd plan`; 2 processes == 1 process."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from scoring_helpers import make_records

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spectrumkd.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "train.jsonl"
    rows = make_records(30, seed=3)
    rows[4]["instruction"] = "word " * 400  # prompt over 256 tokens: dropped
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_score_then_plan(data, tmp_path):
    out = tmp_path / "run" / "scores.jsonl"
    r = cli("score", "--model", "tiny-random:gpt2", "--data", str(data), "--out", str(out),
            "--batch-tokens", "256", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["spectrumkd"] == "scores" and lines[0]["template"] == "dolly"
    assert [x["id"] for x in lines[1:]] == [f"train-{i}" for i in range(1, 31) if i != 5]
    dropped = [json.loads(x) for x in (out.parent / "dropped.jsonl").read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dropped] == [("train-5", "prompt_too_long")]
    r = cli("plan", "--scores", str(out), "--out", str(tmp_path / "plan.json"), "--epochs", "4",
            "--warmup", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["n_total"] == 29
    # same command again reuses the file; another model is a clear error
    r = cli("score", "--model", "tiny-random:llama", "--data", str(data), "--out", str(out), "--no-progress",
            cwd=tmp_path)
    assert r.returncode == 2 and "another run" in r.stderr and "--overwrite" in r.stderr


def test_all_dropped_is_a_clear_error(data, tmp_path):
    r = cli("score", "--model", "tiny-random:llama", "--data", str(data), "--out", str(tmp_path / "s.jsonl"),
            "--max-length", "5", cwd=tmp_path)
    assert r.returncode == 2 and "all 30 examples were dropped" in r.stderr


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun is not installed beside python")
def test_two_processes_equal_one(data, tmp_path):
    common = ["score", "--model", "tiny-random:llama?layers=2&hidden=64", "--data", str(data),
              "--batch-tokens", "128", "--no-progress"]
    one = tmp_path / "one" / "s.jsonl"
    r = cli(*common, "--out", str(one), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two" / "s.jsonl"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "spectrumkd.cli",
                        *common, "--out", str(two)], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = one.read_text().splitlines(), two.read_text().splitlines()
    ha, hb = json.loads(a[0]), json.loads(b[0])
    ha.pop("created"), hb.pop("created")
    assert ha == hb and a[1:] == b[1:]  # every example exactly once, identical scores
    assert (two.parent / "dropped.jsonl").read_text() == (one.parent / "dropped.jsonl").read_text()
