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


# --- spectrumkd.rundir.RunDir: the one owner of the layout ---------------------------------------

from spectrumkd.rundir import COMMIT_MARKER, RunDir  # noqa: E402


def _generation(rd: RunDir, number: int, *, complete: bool = True, **state) -> Path:
    folder = rd.checkpoints / (f"gen-{number:06d}" + ("" if complete else ".tmp"))
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "train_state.json").write_text(json.dumps({"generation": number, **state}))
    if complete:
        (folder / COMMIT_MARKER).write_text("complete\n")
    return folder


def test_rundir_paths_follow_design_section_7(tmp_path: Path):
    rd = RunDir(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in (
        rd.config, rd.dropped, rd.scores, rd.plan, rd.metrics_file, rd.checkpoints, rd.results,
        rd.report_dir)] == ["config.yaml", "dropped.jsonl", "scores.jsonl", "plan.json",
                            "metrics.jsonl", "checkpoints", "eval/results.json", "report"]
    assert not (tmp_path / "x").exists() and RunDir(tmp_path / "x").contents() == []


def test_newest_complete_generation_wins_and_partial_ones_are_ignored(tmp_path: Path):
    rd = RunDir(tmp_path)
    assert not rd.has_checkpoint() and rd.best_model_dir is None and not rd.is_finished()
    _generation(rd, 1, best_generation=None)
    _generation(rd, 2, best_generation=1, finished=True, epoch=3)
    _generation(rd, 3, complete=False, finished=True)  # cut short: never used
    partial_marker = rd.checkpoints / "gen-000004"
    partial_marker.mkdir()  # renamed but no marker (cannot happen, still never used)
    assert rd.latest_checkpoint().name == "gen-000002"
    assert rd.best_model_dir == rd.checkpoints / "gen-000001" / "model"
    assert rd.is_finished() and rd.is_finished(2) and not rd.is_finished(3)
    rd.repair_links()
    assert sorted(p.name for p in rd.checkpoints.iterdir()) == [  # partial ones pruned
        "best", "gen-000001", "gen-000002", "last"]
    assert (rd.checkpoints / "last" / "train_state.json").is_file()
    assert (rd.checkpoints / "best").resolve() == (rd.checkpoints / "gen-000001").resolve()


def test_a_best_that_is_named_but_missing_is_an_error_not_a_silent_none(tmp_path: Path):
    rd = RunDir(tmp_path)
    _generation(rd, 5, best_generation=4)
    with pytest.raises(SpectrumKDError, match="gen-000004.*missing or incomplete"):
        rd.best_checkpoint()


def test_truncate_metrics_keeps_the_checkpoints_rows_and_drops_a_torn_line(tmp_path: Path):
    rd = RunDir(tmp_path)
    rows = [{"kind": "step", "step": s, "epoch": 1 + (s > 2)} for s in (1, 2)]
    rows += [{"kind": "epoch", "epoch": 1, "subset_size": 4, "temperature": 1.0}]
    rows += [{"kind": "step", "step": s, "epoch": 2} for s in (3, 4)]
    rows += [{"kind": "epoch", "epoch": 2, "subset_size": 4, "temperature": 1.0}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    rd.metrics_file.write_text(text + '{"kind": "step", "st')
    assert rd.truncate_metrics(global_step=3, epoch=2) == 2  # step 4 and the epoch-2 line
    assert rd.metrics() == rows[:4]
    assert rd.truncate_metrics(global_step=3, epoch=2) == 0  # idempotent
    assert rd.truncate_metrics(global_step=0, epoch=1) == 4 and rd.metrics() == []


def test_remove_outputs_keeps_user_inputs_and_unknown_files(tmp_path: Path):
    rd = RunDir(tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "dropped.jsonl", "scores.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "plan.json").write_text(json.dumps({"params": {"curriculum": "babystep"}}))
    _generation(rd, 1)
    assert sorted(rd.remove_outputs()) == ["checkpoints", "config.yaml", "dropped.jsonl",
                                           "metrics.jsonl"]
    assert rd.contents() == ["notes.txt", "plan.json", "scores.jsonl"]
    (tmp_path / "plan.json").write_text(json.dumps({"params": {"made_by": "distill"}}))
    assert rd.remove_outputs() == ["plan.json"]  # distill's own plan goes with its run


def test_lock_gives_a_one_line_error_to_a_second_writer(tmp_path: Path):
    rd = RunDir(tmp_path)
    with rd.lock():
        with pytest.raises(SpectrumKDError, match="another spectrumkd process") as exc:
            with RunDir(tmp_path).lock():
                pass
        assert "\n" not in str(exc.value)
    with rd.lock():  # released (and its file removed) when the block ends
        pass
    assert rd.contents() == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("metrics.jsonl", b'{"step": 1}\n{"step": "\xff"}\n', r"metrics\.jsonl:2: not UTF-8"),
    ("config.yaml", b"seed: \xfe\n", r"config\.yaml:1: not UTF-8"),
    ("eval/results.json", b'{"a": "\xff"}', r"results\.json:1: not UTF-8"),
])
def test_report_inputs_that_are_not_utf8_are_one_line_errors(tmp_path: Path, name, content,
                                                              needle):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SpectrumKDError, match=needle):
        load_run(tmp_path)


def test_one_results_lookup_for_run_dirs_eval_dirs_and_files(tmp_path):
    from spectrumkd import SpectrumKDError
    from spectrumkd.evaluate.judge_runs import find_eval_dir
    from spectrumkd.rundir import find_results

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "results.json").write_text("{}")
    found = run / "eval" / "results.json"
    assert find_results(run) == find_results(run / "eval") == find_results(found) == found
    assert find_eval_dir(run) == run / "eval"
    with pytest.raises(SpectrumKDError, match="no results.json in it .*spectrumkd eval --out DIR"):
        find_results(tmp_path / "empty")
    assert find_results(tmp_path / "empty", missing_ok=True) is None
