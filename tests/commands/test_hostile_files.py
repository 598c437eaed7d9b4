"""Issue 20 probes: no user file is replaced without a flag, and system errors are one line.

An output that is (or lies inside, or holds) an input is refused before anything is written
(``compare``, ``plan``, ``score``, ``eval``, ``distill``); ``distill --overwrite`` removes only a
run's files; ``eval`` takes its folder's lock; a temporary file left by a kill blocks nothing;
a full disk, an unwritable ``--out``, JSON and YAML too long or too deep, ``!!python`` and broken
override values, and duplicate YAML keys are each one ``spectrumkd CMD: error:`` line, exit 2.
"""

from __future__ import annotations

import errno
import json
import os

import pytest
import yaml
from test_distill_guards import TINY, snapshot

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.configfile import read_mapping
from spectrumkd.fileio import file_lock, read_json, refuse_overlap
from spectrumkd.jsonl import iter_jsonl
from spectrumkd.rundir import LOCK_NAME, RunDir

SCORES = "".join(json.dumps({"id": f"x{i}", "score": 1.0 + i}) + "\n" for i in range(12))


def one_line(capsys, argv, *needles) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"spectrumkd {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- an output is never an input ---------------------------------------------------------------


def make_run(folder, name):
    """An eval folder with results.json and one generations file (as tests/evaluate builds)."""
    from spectrumkd.evaluate.results import (
        append_rows,
        finish_results,
        generations_header,
        new_results,
        write_results,
    )

    out, rel = folder / name, "generations/dolly/seed10.jsonl"
    header = generations_header(suite="instruct", set="dolly", seed=10, model_fingerprint=name,
                                data_fingerprint="sha256:d", settings={})
    append_rows(out / rel, header, [{"id": f"d{i}", "prediction": "", "score": 10.0 * i}
                                    for i in range(6)])
    results = new_results(suite="instruct", model=name, model_fingerprint=name, settings={})
    results["sets"]["dolly"] = {"metric": "rougeL", "rougeL": 25.0, "n": 6,
                                "data_fingerprint": "sha256:d", "files": [rel]}
    write_results(out / "results.json", finish_results(results))
    return out


def test_refuse_overlap_catches_equal_inside_holding_and_links(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "s.jsonl").write_text(SCORES)
    os.link(data / "s.jsonl", tmp_path / "hard.jsonl")
    os.symlink(data / "s.jsonl", tmp_path / "soft.jsonl")
    for out, needle in [(data / "s.jsonl", "is the input"), (tmp_path / "hard.jsonl", "is the input"),
                        (tmp_path / "soft.jsonl", "is the input"), (data, "holds the input")]:
        with pytest.raises(SpectrumKDError, match=needle):
            refuse_overlap({"--out": out}, {"--data": data / "s.jsonl"})
    with pytest.raises(SpectrumKDError, match="inside the input"):
        refuse_overlap({"--out": data / "x" / "y.json"}, {"--data": data})
    refuse_overlap({"--out": tmp_path / "other.jsonl"}, {"--data": data / "s.jsonl", "hub": "org/set"})


def test_plan_out_equal_to_scores_is_refused(tmp_path, capsys):
    scores = tmp_path / "s.jsonl"
    scores.write_text(SCORES)
    one_line(capsys, ["plan", "--scores", scores, "--out", scores, "--kind", "full"], "is the input")
    assert scores.read_text() == SCORES


def test_score_out_beside_its_own_input_is_refused(tmp_path, capsys):
    data = tmp_path / "dropped.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    before = data.read_bytes()
    one_line(capsys, ["score", "--model", "tiny-random:llama", "--data", data,
                      "--out", tmp_path / "scores.jsonl"], "dropped.jsonl", "is the input")
    one_line(capsys, ["score", "--model", "tiny-random:llama", "--data", data, "--out", data],
             "is the input")
    assert data.read_bytes() == before and not (tmp_path / "scores.jsonl").exists()


def test_compare_json_over_an_input_results_json_is_refused(tmp_path, capsys):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    before = snapshot(a)
    one_line(capsys, ["compare", a, b, "--out", a / "results.md"], "results.json", "is the input")
    assert snapshot(a) == before


def test_eval_refuses_completions_inside_its_generations_and_a_file_as_out(tmp_path, capsys):
    gen = tmp_path / "out" / "generations"
    gen.mkdir(parents=True)
    (gen / "c.jsonl").write_text('{"task_id": "HumanEval/0", "completion": "pass"}\n')
    one_line(capsys, ["eval", "--suite", "code", "--sets", "humaneval", "--completions",
                      gen / "c.jsonl", "--out", tmp_path / "out"], "holds the input")
    (tmp_path / "f").write_text("x")
    one_line(capsys, ["eval", "--sets", "dolly", "--completions", gen / "c.jsonl", "--out",
                      tmp_path / "f"], "is a file")


def test_second_eval_into_one_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    comp = tmp_path / "c.jsonl"
    comp.write_text('{"id": "a", "completion": "x"}\n')
    out.mkdir()
    with file_lock(out / LOCK_NAME):
        one_line(capsys, ["eval", "--completions", comp, "--sets", "dolly", "--out", out],
                 "another spectrumkd process")
    assert sorted(p.name for p in out.iterdir()) == []


# --- distill: --overwrite removes only a run's files; a kill's temp file blocks nothing ----------


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "P")}))
    return path


def test_overwrite_of_a_folder_that_never_held_a_run_is_refused(config, tmp_path, capsys):
    p = tmp_path / "P"
    (p / "eval").mkdir(parents=True)
    (p / "eval" / "notes.txt").write_text("mine")
    (p / "report").mkdir()
    (p / "config.yaml").write_text("seed: 3\n")
    before = snapshot(p)
    one_line(capsys, ["distill", "--config", config, "--overwrite"], "not a spectrumkd run")
    assert snapshot(p) == before


def test_data_inside_the_run_outputs_is_refused(config, tmp_path, capsys):
    (tmp_path / "P" / "eval").mkdir(parents=True)
    data = tmp_path / "P" / "eval" / "train.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    one_line(capsys, ["distill", "--config", config, "--overwrite", f"data.source={data}"],
             "holds the input data.source")
    assert data.exists()


def test_a_kills_temp_config_file_blocks_neither_a_rerun_nor_resume(tmp_path):
    rd = RunDir(tmp_path / "P")
    rd.path.mkdir()
    (rd.path / ".config.yaml.k3j_x9a2.tmp").write_text("seed: ")
    (rd.path / "teacher_cache.tmp").mkdir()
    (rd.path / "notes.tmp").write_text("mine")
    assert rd.contents() == ["notes.tmp"]
    from spectrumkd.train.config import load_config
    from spectrumkd.train.pipeline import check_run_dir

    (rd.path / "notes.tmp").unlink()
    cfg = load_config(None, [], **{k: v for k, v in TINY.items() if isinstance(v, dict)})
    check_run_dir(cfg, rd, resume=True, overwrite=False)  # nothing to resume: starts afresh
    check_run_dir(cfg, rd, resume=False, overwrite=False)


# --- one line, exit 2, for the system's errors and hostile JSON/YAML --------------------------


def test_disk_full_while_writing_a_plan_is_one_line(tmp_path, capsys, monkeypatch):
    scores = tmp_path / "s.jsonl"
    scores.write_text(SCORES)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "plan.json"))

    monkeypatch.setattr("spectrumkd.curriculum.plan.atomic_write_text", full)
    one_line(capsys, ["plan", "--scores", scores, "--out", tmp_path / "plan.json", "--kind", "full"],
             "No space left on device", "plan.json")


def test_out_under_a_file_and_unreadable_input_are_one_line(tmp_path, capsys, monkeypatch):
    scores = tmp_path / "s.jsonl"
    scores.write_text(SCORES)
    (tmp_path / "file").write_text("x")
    one_line(capsys, ["plan", "--scores", scores, "--out", tmp_path / "file" / "plan.json",
                      "--kind", "full"], "is a file, not a folder")
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path) == str(scores):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    one_line(capsys, ["plan", "--scores", scores, "--out", tmp_path / "p.json", "--kind", "full"],
             "Permission denied", "s.jsonl")


@pytest.mark.parametrize("text", ["1" * 5000, "[" * 100_000 + "]" * 100_000])
def test_huge_integers_and_deep_nesting_in_json_are_one_line(tmp_path, text):
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(SpectrumKDError, match="x.json"):
        read_json(p, expect=object)
    p.write_text('{"id": ' + text + "}\n")
    with pytest.raises(SpectrumKDError, match="x.json:1"):
        list(iter_jsonl(p))


@pytest.mark.parametrize(("text", "needle"), [
    ("seed: " + "7" * 5000 + "\n", "not usable YAML"),
    ("a: " + "[" * 100_000 + "\n", "x.yaml"),
    ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
])
def test_hostile_yaml_is_one_line(tmp_path, text, needle):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(SpectrumKDError, match=needle):
        read_mapping(p)


@pytest.mark.parametrize("override", ["seed=!!python/object/apply:os.system [true]",
                                      "experiment.seeds=[", "seed=" + "9" * 5000])
def test_hostile_override_values_are_one_line(tmp_path, capsys, override):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "run")}))
    key = override.partition("=")[0]
    cmd = "experiment" if key.startswith("experiment.") else "distill"
    if cmd == "experiment":
        cfg.write_text(yaml.safe_dump({"experiment": {"seeds": [1]}, "run": TINY}))
        one_line(capsys, [cmd, "--config", cfg, "--out", tmp_path / "run", override], "override")
    else:
        one_line(capsys, [cmd, "--config", cfg, override], "override")
    assert not (tmp_path / "run").exists()


def test_duplicate_key_in_a_run_config_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "run")}) + "seed: 4\nseed: 5\n")
    one_line(capsys, ["distill", "--config", cfg], "duplicate key 'seed'")


@pytest.mark.parametrize("how", ["params-agree", "params-edited", "params-removed"])
def test_a_user_plan_with_other_epochs_than_the_config_is_refused(config, tmp_path, capsys, how):
    from spectrumkd.curriculum import make_plan

    plan = make_plan("full", [f"x{i}" for i in range(12)], [float(i) for i in range(12)], epochs=5)
    data = plan.to_dict()
    if how == "params-edited":  # the file says 2 epochs (the config's) but lists 5
        data["params"]["epochs"] = 2
    elif how == "params-removed":
        del data["params"]["epochs"]
    (tmp_path / "P").mkdir()
    (tmp_path / "P" / "plan.json").write_text(json.dumps(data))
    needle = "lists 5 epochs" if how == "params-edited" else "epochs 5 in the plan, 2 in the config"
    one_line(capsys, ["distill", "--config", config], needle)
    assert sorted(p.name for p in (tmp_path / "P").iterdir()) == ["plan.json"]


def test_disk_full_while_eval_writes_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "instruction": "say hi", "output": "hi"})
                            + "\n" for i in range(3)))
    comp = tmp_path / "c.jsonl"
    comp.write_text("".join(json.dumps({"id": f"q{i}", "completion": "hi"}) + "\n" for i in range(3)))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)  # every durable write (appends and atomic replaces)
    rc = main([str(a) for a in ["eval", "--completions", comp, "--sets", "dolly", "--data", data,
                                "--no-panel", "--out", tmp_path / "e"]])
    lines = capsys.readouterr().err.splitlines()  # progress lines, then the error
    assert rc == 2 and lines[-1] == ("spectrumkd eval: error: No space left on device (free some "
                                     "space and rerun)"), lines


def test_an_out_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "f"
    out.write_text("mine")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"experiment": {"seeds": [1]}, "run": TINY}))
    one_line(capsys, ["experiment", "--config", cfg, "--out", out], "is a file, where a folder is needed")
    one_line(capsys, ["student", "--teacher", "tiny-random:llama?layers=3&hidden=32", "--out", out],
             "is a file, where a folder is needed")
    assert out.read_text() == "mine"
