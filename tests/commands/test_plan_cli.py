"""``spectrumkd plan`` through the real entry point, in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest


def spectrumkd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spectrumkd.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def scores_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scores.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"spectrumkd": "scores", "metric": "ce", "model": "tiny"}) + "\n")
        for i, x in enumerate(rng.lognormal(0.5, 0.4, 300)):
            f.write(json.dumps({"id": f"dolly-{i}", "score": float(x)}) + "\n")
    return path


def test_plan_defaults_are_the_papers(tmp_path, scores_file):
    out = tmp_path / "plan.json"
    r = spectrumkd("plan", "--scores", scores_file, "--out", out)
    assert r.returncode == 0, r.stderr
    plan = json.loads(out.read_text())
    assert len(plan["epochs"]) == 25
    assert [e["start"] for e in plan["epochs"][:6]] == [0] * 6
    assert plan["epochs"][-1]["start"] == 30  # n_early = floor(0.1·300)
    assert plan["epochs"][0]["temperature"] == 1.0 and plan["epochs"][-1]["temperature"] == 2.0
    assert {len(e["ids"]) for e in plan["epochs"]} == {240}
    assert len(plan["zones"]["excluded"]) == 30
    assert "excluded" in r.stdout and "λa = 0.1" in r.stdout and "total difficulty" in r.stdout


def test_plan_flags(tmp_path, scores_file):
    out = tmp_path / "p.json"
    r = spectrumkd("plan", "--scores", scores_file, "--out", out, "--epochs", "6", "--warmup", "1",
                   "--lambda", "auto", "--step", "linear", "--direction", "reverse",
                   "--tau0", "2", "--taun", "1")
    assert r.returncode == 0, r.stderr
    plan = json.loads(out.read_text())
    assert plan["params"]["lambda_auto"] and plan["params"]["direction"] == "reverse"
    assert plan["epochs"][0]["start"] > 0 and plan["epochs"][-1]["start"] == 0
    assert plan["epochs"][0]["temperature"] == 2.0
    assert "auto: log-normal" in r.stdout


@pytest.mark.parametrize("baseline, extra, sizes", [
    ("full", [], [300] * 4),
    ("static", ["--static-range", "0.1:0.9"], [240] * 4),
    ("babystep", ["--buckets", "2"], [150, 150, 300, 300]),
    ("onepass", ["--buckets", "4"], [75] * 4),
    ("random-window", ["--warmup", "1", "--shuffle-seed", "2"], [240] * 4),
    ("curated-shuffle", ["--warmup", "1"], [240] * 4),
])
def test_baselines(tmp_path, scores_file, baseline, extra, sizes):
    out = tmp_path / "b.json"
    r = spectrumkd("plan", "--scores", scores_file, "--out", out, "--epochs", "4",
                   "--baseline", baseline, *extra)
    assert r.returncode == 0, r.stderr
    assert [len(e["ids"]) for e in json.loads(out.read_text())["epochs"]] == sizes
    assert "λa" not in r.stdout  # λ shapes only SpectrumKD's window; a baseline never uses it
    if baseline in ("babystep", "onepass"):
        assert f"{extra[1]} buckets" in r.stdout


@pytest.mark.parametrize("content, args, msg", [
    ('{"id": "a", "score": NaN}\n{"id": "b", "score": 1}\n{"id": "c", "score": 2}\n', [], "'a'"),
    ('{"id": "a", "score": 1}\n{"id": "a", "score": 2}\n{"id": "c", "score": 2}\n', [], "duplicate"),
    ("", [], "no scores"),
    ('{"id": "a", "score": 1}\n', [], "at least 2"),
    ('{"id": "a", "score": 1}\n{oops\n', [], "scores.jsonl:2"),
    (None, ["--lambda-a", "1.5"], "lambda_a must lie in"),
    (None, ["--lambda-a", "0.4", "--lambda-b", "0.3"], "2·lambda_a"),
    (None, ["--lambda-a", "0", "--lambda-b", "1"], "window size"),
    (None, ["--epochs", "5", "--warmup", "4"], "warm-up \\+ 2"),
    (None, ["--step", "jump"], "unknown step"),
    (None, ["--direction", "up"], "unknown direction"),
])
def test_bad_input_writes_nothing(tmp_path, scores_file, content, args, msg):
    src = scores_file
    if content is not None:
        src = tmp_path / "scores.jsonl"
        src.write_text(content)
    out = tmp_path / "never.json"
    r = spectrumkd("plan", "--scores", src, "--out", out, *args)
    assert r.returncode == 2
    assert not out.exists()
    import re
    assert re.search(msg, r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_plan_command_never_imports_torch(tmp_path, scores_file):
    code = (
        "import sys; from spectrumkd.cli import main; "
        f"rc = main(['plan', '--scores', {str(scores_file)!r}, '--out', {str(tmp_path / 'p.json')!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'peft') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
