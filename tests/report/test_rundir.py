from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.report.rundir import load_run, load_runs, read_metrics, unique_names


def test_load_run_reads_every_file(two_runs):
    run = load_run(two_runs[0])
    assert run.name == "spectrumkd"
    assert run.scores is not None and len(run.scores.ids) == 400
    assert run.plan is not None and run.plan.num_epochs == 6
    assert run.config == {"curriculum": {"kind": "spectrumkd"}}
    assert len(run.step_metrics) == 30 and len(run.epoch_metrics) == 6
    assert run.results is None


def test_empty_directory_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(SpectrumKDError, match=str(tmp_path)) as exc:
        load_run(tmp_path)
    assert "metrics.jsonl" in str(exc.value)


def test_missing_directory_is_an_error(tmp_path: Path):
    with pytest.raises(SpectrumKDError, match="not a run directory"):
        load_run(tmp_path / "nope")


def test_a_metrics_only_run_loads(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    run = load_run(tmp_path)
    assert run.scores is None and run.plan is None and run.step_metrics == [{"step": 1, "loss": 2.0}]


def test_metrics_lines_without_kind_are_classified(tmp_path: Path):
    p = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "epoch": 1, "ce": 2.0}, {"epoch": 1, "subset_size": 8, "temperature": 1.0},
            {"kind": "checkpoint", "step": 1}, {"kind": "epoch", "epoch": 2}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    steps, epochs = read_metrics(p)
    assert steps == [rows[0]]
    assert epochs == [rows[1], rows[3]]


def test_malformed_metrics_line_names_file_and_line(tmp_path: Path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2,\n')
    with pytest.raises(SpectrumKDError, match=r"metrics\.jsonl:2"):
        read_metrics(p)
    p.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(SpectrumKDError, match=r"metrics\.jsonl:2: expected a JSON object"):
        read_metrics(p)


def test_malformed_results_json_names_the_file(tmp_path: Path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text("{oops")
    with pytest.raises(SpectrumKDError, match=r"results\.json"):
        load_run(tmp_path)


def test_unique_names_disambiguate_by_parent():
    assert unique_names([Path("x/a/run"), Path("x/b/run")]) == ["a/run", "b/run"]
    assert unique_names([Path("x/run"), Path("x/run")]) == ["run (1)", "run (2)"]


def test_load_runs_needs_a_directory():
    with pytest.raises(SpectrumKDError, match="no run directory"):
        load_runs([])
