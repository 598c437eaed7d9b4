"""Issue 20 crash window: a kill right after a run's last checkpoint was committed, before its
links moved, left ``checkpoints/last`` one generation behind while the experiment kept the run
as finished. The finished test reads the newest committed generation, and the links are
repaired from it before the run is kept."""

import copy
import os

import yaml

from spectrumkd.experiment import run_experiment
from spectrumkd.rundir import RunDir

CONFIG = {
    "experiment": {
        "student": None, "baseline": "full", "seeds": [0], "references": [],
        "arms": {"full": {"curriculum.kind": "none", "curriculum.temperature_schedule": "constant"}},
        "eval": {"data": "spectrumkd:dolly/eval.jsonl", "limit": 2, "seeds": [1],
                 "max_new_tokens": 2, "batch_size": 2},
    },
    "run": {
        "teacher": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=0"},
        "student": {"spec": "tiny-random:llama?layers=1&hidden=32&seed=1"},
        "data": {"source": "spectrumkd:dolly/train.jsonl", "limit": 8, "max_length": 256},
        "curriculum": {"kind": "none", "epochs": 2, "temperature_schedule": "constant"},
        "loss": {"mode": "sft"},
        "optim": {"lr": 1e-3, "batch_size": 4},
        "progress": False,
    },
}


def test_a_finished_run_with_links_behind_is_kept_with_its_links_repaired(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(copy.deepcopy(CONFIG)))
    out = tmp_path / "exp"
    run_experiment(config, out)
    rd = RunDir(out / "runs" / "full" / "seed0")
    newest = rd.latest_checkpoint()
    older = newest.with_name("gen-000001")
    os.rename(newest, older)  # the generation before the last one ...
    (rd.checkpoints / "last").unlink()
    os.symlink(older.name, rd.checkpoints / "last")  # ... is where the links still point
    older.rename(newest)
    (rd.checkpoints / "best").unlink()
    os.symlink(older.name, rd.checkpoints / "best")
    for record in (out / "records").rglob("*.json"):
        record.unlink()  # the unit was not recorded when the kill came
    capsys.readouterr()
    run_experiment(config, out)
    assert "finished run, kept" in capsys.readouterr().out
    assert os.readlink(rd.checkpoints / "last") == newest.name
    assert (rd.checkpoints / "best").resolve().is_dir()
