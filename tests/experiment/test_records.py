"""Runs as records (issue 18): a sharded experiment merged from its records equals the unsharded
one; records of another config are refused; study.json has the interface the study checks read."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.experiment import run_experiment

SMALL = {  # test_experiment.py's config, smaller, with a control arm run end to end
    "experiment": {
        "student": None,
        "baseline": "full",
        "seeds": [0, 1],
        "arms": {
            "full": {"curriculum.kind": "none", "curriculum.temperature_schedule": "constant"},
            "random-window": {"curriculum.kind": "random-window"},
        },
        "references": ["before", "teacher"],
        "eval": {"data": "spectrumkd:dolly/eval.jsonl", "limit": 2, "seeds": [1],
                 "max_new_tokens": 4, "batch_size": 2},
    },
    "run": {
        "teacher": {"spec": "tiny-random:llama?layers=2&hidden=32&seed=0"},
        "student": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=1"},
        "data": {"source": "spectrumkd:dolly/train.jsonl", "template": "dolly", "limit": 20,
                 "max_length": 512, "validation_source": "spectrumkd:dolly/validation.jsonl"},
        "validation": {"size": 2, "max_new_tokens": 2, "curve_points": 2, "curve_rows": 3},
        "curriculum": {"kind": "spectrumkd", "epochs": 3, "warmup_epochs": 1},
        "loss": {"mode": "kd", "divergence": "fkl", "ce_weight": 0.3},
        "teacher_cache": {"enabled": True, "k": 8},
        "optim": {"lr": 1e-3, "batch_size": 4},
        "progress": False,
    },
}
PANEL = ("heldout_ce", "heldout_kl", "entropy", "sample_nll", "rougeL")


def _write(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(SMALL), encoding="utf-8")
    return path


def _study(out):
    study = json.loads((out / "study.json").read_text())
    for run in study["runs"]:
        run.pop("commit")  # the same checkout either way; dropped so a dirty tree cannot matter
    return study


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("records")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPECTRUMKD_CACHE", str(tmp / "cache"))
    config = _write(tmp)
    whole = tmp / "whole"
    run_experiment(config, whole)
    shards = [tmp / f"shard{i}" for i in range(2)]
    for i, out in enumerate(shards):
        run_experiment(config, out, shard=(i, 2))
    yield config, whole, shards
    mp.undo()


def test_two_shards_merged_equal_the_unsharded_experiment(experiments, tmp_path, capsys):
    config, whole, shards = experiments
    recorded = [sorted(p.relative_to(s).as_posix() for p in (s / "records").rglob("*.json"))
                for s in shards]
    assert recorded == [  # every other unit of the grid (per seed: full, random-window; refs)
        ["records/arms/full/seed0.json", "records/arms/full/seed1.json",
         "records/references/before.json"],
        ["records/arms/random-window/seed0.json", "records/arms/random-window/seed1.json",
         "records/references/teacher.json"],
    ]
    merged = tmp_path / "merged"
    for s in shards:
        shutil.copytree(s / "records", merged / "records", dirs_exist_ok=True)
    capsys.readouterr()
    results = run_experiment(config, merged)  # no --shard: runs what has no record, here nothing
    assert not (merged / "runs").exists() and not (merged / "references").exists()
    assert "finished run, kept" in capsys.readouterr().out
    assert _study(merged) == _study(whole)
    assert results["arms"] == json.loads((whole / "results.json").read_text())["arms"]
    assert (merged / "results.md").read_text() == (whole / "results.md").read_text()
    assert (merged / "per_prompt.jsonl").read_text() == (whole / "per_prompt.jsonl").read_text()


def test_study_json_interface(experiments):
    _, whole, _ = experiments
    study = json.loads((whole / "study.json").read_text())
    plan = json.loads((whole / "runs/full/seed0/plan.json").read_text())
    assert study["n_train"] == plan["n_total"]
    assert {(r["arm"], r["seed"]) for r in study["runs"]} == {
        (a, s) for a in ("full", "random-window") for s in (0, 1)}
    for run in study["runs"]:
        assert isinstance(run["steps"], int) and run["steps"] == run["planned_steps"]
        curve = run["curves"]["heldout_kl"]
        assert curve[0][0] == 0 and len(curve) >= 2 and all(len(p) == 2 for p in curve)
        assert set(PANEL) <= set(run["panel"])
    for ref in ("before", "teacher"):
        assert set(PANEL) <= set(study["references"][ref])
    by_metric = {c["metric"]: c for c in study["comparisons"]}
    assert {"heldout_kl", "heldout_kl_auc", "rougeL"} <= set(by_metric)
    for c in study["comparisons"]:
        assert c["arm"] == "random-window" and c["baseline"] == "full" and c["n_seeds"] == 2
        lo, hi = c["ci95"]
        assert lo <= c["mean_diff"] <= hi
        assert c["p"] >= 0.5  # the exact floor at 2 seeds is 2/2² = 0.5
    runs = {(r["arm"], r["seed"]): r for r in study["runs"]}
    kl = [runs["random-window", s]["panel"]["heldout_kl"] - runs["full", s]["panel"]["heldout_kl"]
          for s in (0, 1)]
    assert by_metric["heldout_kl"]["mean_diff"] == pytest.approx(sum(kl) / 2)
    assert "p_per_prompt_secondary" in by_metric["rougeL"]
    assert "p (per prompt, secondary)" in (whole / "results.md").read_text()
    rec = json.loads((whole / "records/arms/random-window/seed1.json").read_text())
    assert rec["kind"] == "random-window" and len(rec["config_hash"]) == 16
    assert not list((whole / "records").rglob("*.safetensors"))


def test_a_record_of_another_config_is_refused(experiments, tmp_path):
    config, whole, _ = experiments
    out = tmp_path / "copy"
    shutil.copytree(whole / "records", out / "records")
    with pytest.raises(SpectrumKDError, match=r"seed0\.json: config hash \w+ differs") as err:
        run_experiment(config, out, ["run.optim.lr=0.002"], run=False)
    assert "\n" not in str(err.value)
    # more seeds keep the records made so far (a seed is not part of another seed's hash)
    more = run_experiment(config, out, ["experiment.seeds=[0,1,2]"], run=False)
    assert more["arms"]["full"]["n_seeds"] == 2


@pytest.mark.parametrize("shard", ["2/2", "x/2", "1"])
def test_bad_shard_is_a_usage_error(tmp_path, shard):
    r = subprocess.run([sys.executable, "-m", "spectrumkd.cli", "experiment", "--config",
                        str(_write(tmp_path)), "--out", str(tmp_path / "o"), "--shard", shard],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "I/N" in r.stderr
    assert not (tmp_path / "o").exists()
