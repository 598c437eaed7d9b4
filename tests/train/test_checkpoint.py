"""Checkpoints: no pickles, generations that survive a kill at every write step, exact resume.

A kill is simulated by replacing ``checkpoint._stage`` (called after each step of a write) with
one that raises a ``BaseException`` the loop does not catch, at one stage of one save; one test
kills a real subprocess with ``os._exit`` instead. After each kill the run must resume from the
newest complete generation and end with the uninterrupted run's losses, metrics and weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import STUDENT, full_plan, make_cfg
from spectrumkd import SpectrumKDError
from spectrumkd.models import load_model
from spectrumkd.rundir import RunDir
from spectrumkd.train import checkpoint
from spectrumkd.train.loop import train

REPO = Path(__file__).resolve().parents[2]
N_EXAMPLES, EPOCHS = 8, 2  # 2 steps per epoch at batch 4; 4 steps in all (SFT: no teacher)
# With save_every_steps=1 the saves are: step 1 (mid-epoch), 2 (end of epoch 1), 3 (mid-epoch),
# 4 (the end, which becomes ``best``).
SAVE_EVERY = 1
STAGES = ["begin", "weights", "optimizer", "state", "plan", "export", "rng", "fsync", "marker",
          "rename", "last-link", "best-link", "prune"]
# Every stage of a mid-epoch save; for the final save (which moves ``best``), the stages around
# the commit and the links.
CASES = [(stage, 3) for stage in STAGES] + [
    (stage, 4) for stage in ("begin", "export", "marker", "rename", "last-link", "best-link", "prune")
]


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the loop handles it."""


def _cfg():
    return make_cfg(optim={"schedule": "cosine", "warmup_steps": 1}, curriculum={"epochs": EPOCHS},
                    loss={"mode": "sft"}, save_every_steps=SAVE_EVERY)


def _train(examples, tokenizer, run_dir, **kw):
    student = load_model(STUDENT)
    result = train(_cfg(), student=student, tokenizer=tokenizer, examples=examples[:N_EXAMPLES],
                   plan=full_plan(examples[:N_EXAMPLES], EPOCHS),
                   run_dir=run_dir, **kw)
    return result, student


def _step_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in RunDir(run_dir).metrics() if r["kind"] == "step"]


def _epoch_rows(run_dir: Path) -> list[tuple]:
    return [(r["epoch"], r["steps"], r["epoch_loss"]) for r in RunDir(run_dir).metrics()
            if r["kind"] == "epoch"]


@pytest.fixture(scope="module")
def reference(examples, tokenizer, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result, student = _train(examples, tokenizer, run_dir)
    weights = {n: p.detach().clone() for n, p in student.named_parameters()}
    return {"dir": run_dir, "losses": result.losses, "weights": weights}


def _kill_at(monkeypatch, stage: str, save_number: int) -> None:
    seen = {"saves": 0}

    def fake_stage(name: str) -> None:
        if name == "begin":
            seen["saves"] += 1
        if name == stage and seen["saves"] == save_number:
            raise Killed(f"{stage} of save {save_number}")

    monkeypatch.setattr(checkpoint, "_stage", fake_stage)


def _links_are_sound(run_dir: Path) -> None:
    ckpts = run_dir / "checkpoints"
    for name in ("last", "best"):
        link = ckpts / name
        if link.is_symlink():  # a link that exists always names a complete generation
            assert (link / "COMMITTED").is_file(), f"{name} -> {os.readlink(link)} is not complete"


def _assert_equals_reference(run_dir: Path, reference, student) -> None:
    ref_dir = reference["dir"]
    steps = _step_losses(run_dir)
    assert [s for s, _ in steps] == list(range(1, 5))  # no duplicate rows, none missing
    assert [loss for _, loss in steps] == pytest.approx([x for _, x in _step_losses(ref_dir)],
                                                       rel=1e-6)
    got, want = _epoch_rows(run_dir), _epoch_rows(ref_dir)
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert [r[2] for r in got] == pytest.approx([r[2] for r in want], rel=1e-6)
    for name, p in student.named_parameters():
        torch.testing.assert_close(p, reference["weights"][name], rtol=1e-5, atol=1e-6, msg=name)
    rd = RunDir(run_dir)
    assert rd.is_finished(EPOCHS) and (rd.best_model_dir / "config.json").is_file()
    assert [g.name for g in rd.generations()] == ["gen-000004"]  # older ones pruned


@pytest.mark.parametrize(("stage", "save_number"), CASES,
                         ids=[f"{s}-of-{'mid-epoch' if n == 3 else 'final'}-save" for s, n in CASES])
def test_kill_at_every_write_step_resumes_to_the_uninterrupted_run(
    examples, tokenizer, tmp_path, monkeypatch, reference, stage, save_number
):
    _kill_at(monkeypatch, stage, save_number)
    with pytest.raises(Killed):
        _train(examples, tokenizer, tmp_path)
    monkeypatch.setattr(checkpoint, "_stage", lambda name: None)
    _links_are_sound(tmp_path)
    rd = RunDir(tmp_path)
    latest = rd.latest_checkpoint()
    committed = STAGES.index(stage) >= STAGES.index("rename")
    assert latest is not None and latest.name == f"gen-{save_number - (not committed):06d}"
    if save_number == 4 and committed:  # the marker is on disk: the finished run is complete
        assert rd.is_finished(EPOCHS)
    _, student = _train(examples, tokenizer, tmp_path, resume=True)
    _assert_equals_reference(tmp_path, reference, student)


def test_sigkill_of_a_real_process_mid_write_leaves_a_resumable_run(
    examples, tokenizer, tmp_path, reference
):
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_checkpoint as t
from spectrumkd.train import checkpoint
from spectrumkd.models import tiny_tokenizer
from spectrumkd.data import build_examples
from conftest import records
n = {{"saves": 0}}
def die(name):
    n["saves"] += name == "begin"
    if name == "weights" and n["saves"] == 3:
        os._exit(9)  # no cleanup, no flush: like SIGKILL
checkpoint._stage = die
tok = tiny_tokenizer()
exs, _ = build_examples(records(16), tok, max_length=128)
t._train(exs, tok, {str(tmp_path)!r})
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "gen-000003.tmp").is_dir()  # the cut-short generation
    assert RunDir(tmp_path).latest_checkpoint().name == "gen-000002"
    _, student = _train(examples, tokenizer, tmp_path, resume=True)
    _assert_equals_reference(tmp_path, reference, student)


def test_mid_epoch_checkpoint_resumes_exactly_and_metrics_have_no_duplicates(
    examples, tokenizer, tmp_path, reference, capsys
):
    def interrupt(row):
        if row["step"] == 4:  # the last step; the newest generation is the mid-epoch one of step 3
            raise Killed

    with pytest.raises(Killed):
        _train(examples, tokenizer, tmp_path, on_step=interrupt)
    assert len(_step_losses(tmp_path)) == 4  # step 4 was logged before the kill
    state = RunDir(tmp_path).checkpoint_state()
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 1, 3)
    capsys.readouterr()
    resumed, student = _train(examples, tokenizer, tmp_path, resume=True)
    assert "gen-000003 (epoch 2, 1 steps into it, global step 3)" in capsys.readouterr().out
    assert resumed.losses == pytest.approx(reference["losses"][3:], rel=1e-6)
    _assert_equals_reference(tmp_path, reference, student)


def test_resume_says_which_generation_it_picked(examples, tokenizer, tmp_path, capsys):
    def interrupt(row):
        if row["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        _train(examples, tokenizer, tmp_path, on_step=interrupt)
    (tmp_path / "checkpoints" / "gen-000002.tmp").mkdir()  # a partial generation: never used
    capsys.readouterr()
    _train(examples, tokenizer, tmp_path, resume=True)
    out = capsys.readouterr().out
    assert "resuming from" in out and "gen-000001" in out and "global step 1" in out


def test_tampered_state_pt_is_refused_and_runs_no_code(examples, tokenizer, tmp_path, reference):
    folder = RunDir(reference["dir"]).latest_checkpoint()
    copy = tmp_path / "ckpt"
    import shutil

    shutil.copytree(folder, copy)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    blob = torch.load(copy / "state.pt", weights_only=True)
    blob["evil"] = Evil()
    torch.save(blob, copy / "state.pt")
    with pytest.raises(SpectrumKDError, match=r"state\.pt: refused to load"):
        checkpoint.load_checkpoint(copy, model=load_model(STUDENT))
    assert not marker.exists()


def test_checkpoint_files_hold_no_pickles_but_state_pt(reference):
    folder = RunDir(reference["dir"]).latest_checkpoint()
    rng = json.loads((folder / "rng-0.json").read_text())
    assert set(rng) == {"python", "numpy"} and len(rng["numpy"]["keys"]) == 624
    assert load_file(str(folder / "rng-0.safetensors"))["torch"].dtype == torch.uint8
    state = json.loads((folder / "train_state.json").read_text())
    assert state["finished"] and state["generation"] == state["best_generation"] == 4
    blob = torch.load(folder / "state.pt", weights_only=True)  # the safe unpickler suffices
    assert set(blob) == {"optimizer", "scheduler"}
    assert not [f for f in folder.rglob("*") if f.suffix in (".pt", ".pkl", ".bin")
                and f.name != "state.pt"]


def test_rng_state_round_trips():
    import random

    import numpy as np

    plain, tensors = checkpoint.rng_state()
    plain = json.loads(json.dumps(plain))
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(plain, tensors)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_nothing_in_src_loads_a_pickle():
    proc = subprocess.run(["grep", "-rn", r"weights_only=False\|pickle.load", str(REPO / "src")],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout


def test_a_fresh_run_refuses_a_directory_with_checkpoints(examples, tokenizer, reference):
    with pytest.raises(SpectrumKDError, match="resume the run"):
        _train(examples, tokenizer, reference["dir"])


def test_ctrl_c_during_the_best_save_still_leaves_a_best(examples, tokenizer, tmp_path,
                                                         monkeypatch, reference):
    calls = {"saves": 0}

    def ctrl_c(name: str) -> None:
        calls["saves"] += name == "begin"
        if name == "export" and calls["saves"] == 4:  # the final save, which makes `best`
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_stage", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        _train(examples, tokenizer, tmp_path)
    rd = RunDir(tmp_path)  # the interrupt save (generation 5) took the best's place
    assert rd.latest_checkpoint().name == "gen-000005"
    assert rd.is_finished(EPOCHS) and rd.best_checkpoint() == rd.latest_checkpoint()
    _links_are_sound(tmp_path)
