"""`spectrumkd distill` guards its run directory: each refusal is one line and writes nothing.

Probes of issue 11 ("runs clobbering runs", "tracebacks instead of one-line errors"): a finished
run directory without --resume, a resume with another config, ``output_dir: ""``, NaN/negative
config values, a user's plan.json (used, never replaced; an error when it contradicts the
config), --overwrite, and a second writer while the run directory is locked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "teacher": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=2"},
    "student": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=1"},
    "data": {"source": "spectrumkd:dolly/train.jsonl", "limit": 10, "max_length": 256},
    "curriculum": {"kind": "full", "epochs": 2, "batch_tokens": 2048},
    "optim": {"lr": 1e-3, "batch_size": 4},
    "progress": False,
}


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its bytes (files) or link target: equal means untouched."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes().hex()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "run")}))
    return path


def distill(config: Path, *args: str, capsys) -> tuple[int, str, str]:
    rc = main(["distill", "--config", str(config), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spectrumkd distill: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A directory that looks like a finished run (refusals happen before any model loads)."""
    run = tmp_path / "run"
    (run / "checkpoints" / "gen-000002").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY, "output_dir": str(run)}))
    (run / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": 2.0}\n')
    return run


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(
    config, fake_run, capsys
):
    before = snapshot(fake_run)
    rc, _, err = distill(config, capsys=capsys)
    refused(rc, err, "already holds another run", "--resume", "--overwrite")
    assert snapshot(fake_run) == before


def test_resume_with_another_model_fails_before_config_yaml_is_touched(config, fake_run, capsys):
    before = snapshot(fake_run)
    rc, _, err = distill(config, "--resume", "student.spec=tiny-random:llama?layers=2&hidden=32",
                         capsys=capsys)
    refused(rc, err, "config differs", "student.spec")
    assert snapshot(fake_run) == before


def test_resume_and_overwrite_exclude_each_other(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--config", str(config), "--resume", "--overwrite"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["flag", "config"])
def test_empty_output_dir_is_an_error_and_nothing_is_written_here(
    tmp_path, monkeypatch, capsys, how
):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output_dir": "" if how == "config" else "runs/x"}))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _, err = distill(cfg, *(["--output-dir", ""] if how == "flag" else []), capsys=capsys)
    refused(rc, err, "output_dir is empty")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(("override", "needle"), [
    ("optim.lr=.nan", "optim.lr"),
    ("loss.ce_weight=.nan", "loss.ce_weight"),
    ("curriculum.tau0=-1", "curriculum.tau0"),
    ("curriculum.taun=.inf", "curriculum.taun"),
    ("optim.betas=[0.9, .nan]", "optim.betas"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("curriculum.buckets=0", "curriculum.buckets"),
    ("save_every_steps=0", "save_every_steps"),
])
def test_bad_numbers_are_refused_before_anything_is_written(config, tmp_path, capsys, override,
                                                            needle):
    rc, _, err = distill(config, override, capsys=capsys)
    refused(rc, err, needle)
    assert not (tmp_path / "run").exists()


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(b"seed: 1\noutput_dir: \xff\n")
    rc, _, err = distill(cfg, capsys=capsys)
    refused(rc, err, "bad.yaml:2: not UTF-8")


def test_a_locked_run_directory_gives_a_one_line_error(config, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with run.lock():  # another writer (flock is per open file, so this process counts as one)
        rc, _, err = distill(config, capsys=capsys)
    refused(rc, err, "another spectrumkd process", f"pid {os.getpid()}")
    assert run.contents() == []


def _user_plan(tmp_path: Path, *extra: str) -> Path:
    """A babystep plan from `spectrumkd plan`, as a user would make one."""
    from spectrumkd.data import build_examples, load_records
    from spectrumkd.models import load_tokenizer

    data = TINY["data"]
    examples, _ = build_examples(load_records(data["source"], limit=data["limit"]),
                                 load_tokenizer(TINY["student"]["spec"]),
                                 max_length=data["max_length"])
    ids = [ex.id for ex in examples]  # those that survive the length filter, as distill sees them
    scores = tmp_path / "user-scores.jsonl"
    scores.write_text("".join(json.dumps({"id": i, "score": float(k)}) + "\n"
                              for k, i in enumerate(ids)))
    out = tmp_path / "run" / "plan.json"
    assert main(["plan", "--scores", str(scores), "--out", str(out), "--baseline", "babystep",
                 "--epochs", "2", "--buckets", "2", *extra]) == 0
    return out


def test_a_user_plan_that_contradicts_the_config_is_refused_before_writing(config, tmp_path,
                                                                           capsys):
    plan = _user_plan(tmp_path)
    capsys.readouterr()
    before = snapshot(plan.parent)
    rc, _, err = distill(config, capsys=capsys)  # the config says kind=full
    refused(rc, err, "plan.json conflicts", "curriculum 'babystep' in the plan")
    assert snapshot(plan.parent) == before


def test_user_plan_is_used_not_replaced_then_overwrite_and_resume(config, tmp_path, capsys):
    plan = _user_plan(tmp_path)
    capsys.readouterr()
    plan_bytes = plan.read_bytes()
    args = ("curriculum.kind=babystep", "curriculum.buckets=2")
    rc, out, err = distill(config, *args, capsys=capsys)
    assert rc == 0, err
    assert "using the plan in" in out and "best model:" in out
    assert plan.read_bytes() == plan_bytes  # used as it is, never replaced
    run = RunDir(tmp_path / "run")
    assert run.is_finished(2) and (run.best_model_dir / "config.json").is_file()
    epochs = [r for r in run.metrics() if r["kind"] == "epoch"]
    user = json.loads(plan_bytes)
    assert [r["subset_size"] for r in epochs] == [len(e["ids"]) for e in user["epochs"]]

    # Again without a flag: refused, nothing changes.
    before = snapshot(run.path)
    rc, _, err = distill(config, *args, capsys=capsys)
    refused(rc, err, "already holds another run")
    assert snapshot(run.path) == before

    # --resume of a finished run: nothing to train, no duplicate metrics rows.
    rc, out, err = distill(config, "--resume", *args, capsys=capsys)
    assert rc == 0, err
    assert "is already complete (2 epochs" in out and "nothing to resume" in out
    assert "resuming from" not in out and "over 2 epochs" in out
    old_rows = bytes.fromhex(before["metrics.jsonl"]).decode().splitlines()
    assert run.metrics() == [json.loads(x) for x in old_rows]

    # --overwrite replaces the run's outputs but keeps the user's plan.
    rc, out, err = distill(config, "--overwrite", *args, capsys=capsys)
    assert rc == 0, err
    assert "--overwrite: removed" in out and plan.read_bytes() == plan_bytes
    assert len([r for r in run.metrics() if r["kind"] == "epoch"]) == 2  # one run, not two


def test_distill_subprocess_refusal_is_one_line(fake_run, config):
    """The real entry point, as a user runs it (the other tests call cli.main in-process)."""
    before = snapshot(fake_run)
    proc = subprocess.run([sys.executable, "-m", "spectrumkd.cli", "distill", "--config",
                           str(config)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(fake_run) == before


def test_unreadable_data_fails_before_the_run_directory_exists(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {"source": str(bad)},
                                   "output_dir": str(tmp_path / "run")}))
    rc, _, err = distill(cfg, capsys=capsys)
    refused(rc, err, "bad.jsonl:2: not UTF-8")
    assert not (tmp_path / "run").exists()


def test_a_user_plan_with_ids_not_in_the_data_writes_nothing(config, tmp_path, capsys):
    plan = tmp_path / "run" / "plan.json"
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(json.dumps({"id": f"ghost-{i}", "score": float(i)}) + "\n"
                              for i in range(6)))
    assert main(["plan", "--scores", str(scores), "--out", str(plan), "--baseline", "full",
                 "--epochs", "2"]) == 0
    capsys.readouterr()
    before = snapshot(plan.parent)
    rc, _, err = distill(config, capsys=capsys)
    refused(rc, err, "plan.json", "ghost-")
    assert snapshot(plan.parent) == before


def test_a_run_from_before_new_keys_resumes_only_as_it_ran(config, fake_run, capsys):
    from dataclasses import asdict

    from spectrumkd.train.config import load_config
    from spectrumkd.train.pipeline import _check_resume_config

    cfg = load_config(config)
    saved = yaml.safe_load((fake_run / "config.yaml").read_text())
    full = asdict(cfg)
    for section, key in (("optim", "group_by_length"), ("validation", "curve_points"), ("validation", "curve_rows")):
        del full[section][key]  # what an older spectrumkd wrote
    (fake_run / "config.yaml").write_text(yaml.safe_dump(full))
    with pytest.raises(SpectrumKDError, match="written before optim.group_by_length, validation.curve_points existed; "
                       "resume it as it ran with optim.group_by_length=false validation.curve_points=0"):
        _check_resume_config(cfg, fake_run / "config.yaml")
    cfg.optim.group_by_length, cfg.validation.curve_points = False, 0
    _check_resume_config(cfg, fake_run / "config.yaml")  # accepted
    cfg.optim.lr *= 2
    with pytest.raises(SpectrumKDError, match="differs .* optim.lr"):
        _check_resume_config(cfg, fake_run / "config.yaml")
    assert saved  # the fixture's own file was a valid config before
