"""spectrumkd experiment on tiny random models: arms × seeds, equal budgets, results, resume."""

import json

import pytest
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.demo import run_demo
from spectrumkd.experiment import load_experiment, run_experiment

CONFIG = {
    "experiment": {
        "student": None,
        "baseline": "full",
        "seeds": [0, 1],
        "arms": {
            "full": {"curriculum.kind": "none", "curriculum.temperature_schedule": "constant"},
            "spectrumkd": {},
        },
        "references": ["before", "teacher"],
        "eval": {"data": "spectrumkd:dolly/eval.jsonl", "limit": 3, "seeds": [1, 2],
                 "max_new_tokens": 4, "batch_size": 3},
    },
    "run": {
        "teacher": {"spec": "tiny-random:llama?layers=2&hidden=32&seed=0"},
        "student": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=1"},
        "data": {"source": "spectrumkd:dolly/train.jsonl", "template": "dolly", "limit": 32,
                 "max_length": 512, "validation_source": "spectrumkd:dolly/validation.jsonl"},
        "validation": {"size": 2, "max_new_tokens": 2, "curve_points": 2, "curve_rows": 3},
        "curriculum": {"kind": "spectrumkd", "epochs": 5, "warmup_epochs": 1},
        "loss": {"mode": "kd", "divergence": "fkl", "ce_weight": 0.3},
        "teacher_cache": {"enabled": True, "k": 8},
        "optim": {"lr": 1e-3, "batch_size": 4},
        "progress": False,
    },
}


def _write(tmp_path, cfg=CONFIG):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_paper_epoch_rule_and_validation(tmp_path):
    exp, base, arms = load_experiment(_write(tmp_path))
    assert arms["spectrumkd"].curriculum.epochs == 5
    assert arms["full"].curriculum.epochs == 4  # round(0.8 × 5): the paper's 20:25
    assert arms["full"].curriculum.kind == "none"
    bad = json.loads(json.dumps(CONFIG))
    bad["experiment"]["baseline"] = "nope"
    with pytest.raises(SpectrumKDError, match="baseline 'nope' is not an arm"):
        load_experiment(_write(tmp_path, bad))
    bad = json.loads(json.dumps(CONFIG))
    bad["experiment"]["arms"]["x"] = {"optim.lr": "nan-ish", "curriculum.kindd": "none"}
    with pytest.raises(SpectrumKDError, match="kindd"):
        load_experiment(_write(tmp_path, bad))


def test_experiment_runs_compares_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exp"
    results = run_experiment(_write(tmp_path), out)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["baseline"] == "full"
    for name in ("full", "spectrumkd"):
        arm = on_disk["arms"][name]
        assert arm["n_seeds"] == 2
        assert 0 <= arm["rougeL_mean"] <= 100 and arm["rougeL_std"] >= 0
        assert arm["steps_per_seed"] == arm["planned_steps_per_seed"]
    # steps by hand from the plans: N rows after filtering, window M = N − 2⌊0.1·N⌋, batch 4
    plan = json.loads((out / "runs" / "spectrumkd" / "seed0" / "plan.json").read_text())
    n = plan["n_total"]
    m = n - 2 * (n // 10)
    assert all(len(e["ids"]) == m for e in plan["epochs"])
    assert on_disk["arms"]["spectrumkd"]["steps"] == 5 * -(-m // 4)
    assert on_disk["arms"]["full"]["steps"] == 4 * -(-n // 4)
    assert on_disk["arms"]["spectrumkd"]["p_vs_baseline"] is not None
    assert on_disk["arms"]["spectrumkd"]["n_pairs"] == 2 * 2 * 3  # train seeds × gen seeds × prompts
    assert on_disk["arms"]["full"]["p_vs_baseline"] is None
    assert results["references"]["before"]["rougeL_mean"] is not None
    # the metric panel: means over training seeds per arm, and both references
    keys = {"heldout_ce", "heldout_kl", "entropy", "sample_nll", "rougeL", "rougeL_greedy"}
    for name in ("full", "spectrumkd"):
        arm = on_disk["arms"][name]
        assert keys <= set(arm["panel"]) and set(arm["panel_per_seed"]) == {"0", "1"}
        for key in keys:
            per_seed = [arm["panel_per_seed"][s][key] for s in ("0", "1")]
            assert arm["panel"][key] == pytest.approx(sum(per_seed) / 2)
        assert arm["panel"]["rougeL"] == pytest.approx(arm["rougeL_mean"])
    for ref in ("before", "teacher"):
        assert keys <= set(on_disk["references"][ref]["panel"])
    assert on_disk["references"]["teacher"]["panel"]["heldout_kl"] < 1e-3  # KL(p‖p) = 0
    assert on_disk["references"]["before"]["panel"]["heldout_kl"] > 0.001
    assert "teacher NLL of samples ↓" in (out / "results.md").read_text()
    # one teacher pass for the evaluations' rows, one for the training curves' held-out rows
    assert len(list((tmp_path / "cache" / "teacher_logprobs").iterdir())) == 2
    curve = [json.loads(x) for x in (out / "runs/full/seed0/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve if r["kind"] == "curve"] == [0, 2 * -(-n // 4), 4 * -(-n // 4)]
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 * 3
    assert "| spectrumkd |" in (out / "results.md").read_text()
    assert (out / "figures" / "results.png").is_file()
    # every arm × seed is an ordinary run directory
    run = out / "runs" / "spectrumkd" / "seed1"
    assert (run / "plan.json").is_file() and (run / "config.yaml").is_file()

    # resume: nothing is retrained or re-evaluated
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/metrics.jsonl")}
    capsys.readouterr()
    again = run_experiment(_write(tmp_path), out)
    assert "finished run, kept" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert again["arms"] == results["arms"]

    # the same runs, their last checkpoints: evaluated beside the best ones, nothing retrained
    last = run_experiment(_write(tmp_path), out, ["experiment.eval.checkpoint=last"])
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert last["checkpoint"] == "last" and (out / "results-last.json").is_file()
    assert (out / "runs" / "full" / "seed0" / "eval-last" / "results.json").is_file()
    assert json.loads((out / "results.json").read_text())["checkpoint"] == "best"
    assert "last checkpoint" in (out / "results-last.md").read_text()

    # the demo's report over the finished experiment: it opens with the panel, then the curves
    # and the answers; nothing is retrained
    report = run_demo(_write(tmp_path), out)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    text = report.read_text()
    order = [text.index(h) for h in ("## Metric panel", "## Held-out curves", "## Answers side by side",
                                     "## Results", "| run | directory |", "## Training")]
    assert order == sorted(order) and text.count("## Held-out curves") == 1
    for row in ("| student before training |", "| full (2 seeds) |", "| spectrumkd (2 seeds) |",
                "| teacher |", "| reference |"):
        assert row in text
    figures = [line[line.index("](") + 2 : -1] for line in text.splitlines() if line.startswith("![")]
    assert len(figures) >= 4 and "heldout.png" in figures
    assert all((report.parent / f).is_file() for f in figures)
