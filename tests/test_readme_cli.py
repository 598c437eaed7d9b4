"""The README's CLI quick start is one story: later steps read what earlier steps wrote.

The slow steps (student build, scoring, distillation, evaluation) need the real model and run by
hand (their times are in the README); here the cheap ones run verbatim: the `plan` line on a
scores file shaped like step 2's, then the run-directory check that step 4's `distill` makes
before it loads any model, which accepts that plan for configs/smollm2-dolly200.yaml.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from spectrumkd.cli import main

REPO = Path(__file__).resolve().parents[1]


def story() -> list[list[str]]:
    """The `spectrumkd ...` commands of the quick-start block, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "# 0. the teacher" in b)
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("spectrumkd "):
            commands.append(shlex.split(line))
    return commands


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_each_step_reads_what_an_earlier_step_wrote():
    cmds = story()
    names = [c[1] for c in cmds]
    assert names == ["student", "score", "plan", "distill", "distill", "eval", "eval", "compare",
                     "report"]
    student, score, plan, *rest = cmds
    distills = [c for c in rest if c[1] == "distill"]
    evals = [c for c in rest if c[1] == "eval"]
    assert _arg(score, "--model") == _arg(student, "--out")
    assert _arg(plan, "--scores") == _arg(score, "--out")
    runs = [_arg(c, "--output-dir") for c in distills]
    assert Path(_arg(plan, "--out")).parent == Path(runs[0])
    config = (REPO / _arg(distills[0], "--config")).read_text()
    assert f"spec: {_arg(student, '--out')}" in config  # the config distils step 1's student
    assert [Path(_arg(c, "--model")).parts[0:2] for c in evals] == [Path(r).parts[0:2] for r in runs]
    assert [_arg(c, "--out") for c in evals] == [f"{r}/eval" for r in runs]
    compare, report = rest[-2:]
    assert set(compare[2:4]) == set(report[2:4]) == set(runs)


def test_plan_step_verbatim_and_the_distill_check_accepts_it(tmp_path, monkeypatch, capsys):
    from spectrumkd.data import load_records
    from spectrumkd.rundir import RunDir
    from spectrumkd.train.config import load_config
    from spectrumkd.train.pipeline import check_run_dir

    cmds = story()
    score, plan, distill = cmds[1], cmds[2], cmds[3]
    monkeypatch.chdir(tmp_path)
    out = Path(_arg(score, "--out"))
    out.parent.mkdir(parents=True)
    ids = [r.id for r in load_records(_arg(score, "--data"), limit=int(_arg(score, "--limit")))]
    out.write_text("".join(f'{{"id": "{i}", "score": {1 + (k * 37) % 200 / 50}}}\n'
                           for k, i in enumerate(ids)))
    (out.parent / "dropped.jsonl").write_text("")  # `score` writes it beside the scores
    assert main(plan[1:]) == 0, capsys.readouterr().err
    cfg = load_config(REPO / _arg(distill, "--config"), [])
    cfg = dataclasses.replace(cfg, output_dir=_arg(distill, "--output-dir"))
    check_run_dir(cfg, RunDir(cfg.output_dir), resume=False, overwrite=False)  # raises on mismatch
    with pytest.raises(Exception, match="epochs"):  # and the check can fail: another epoch count
        check_run_dir(dataclasses.replace(cfg, curriculum=dataclasses.replace(cfg.curriculum, epochs=5)),
                      RunDir(cfg.output_dir), resume=False, overwrite=False)
