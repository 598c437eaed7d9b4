"""Issue 20 probes: tampered training state is refused on load, never trusted.

A checkpoint whose ``train_state.json`` says epoch 99, whose counters disagree, whose weights are
NaN, truncated or of another shape, or whose ``state.pt`` is not optimizer state; a teacher cache
with edited arrays or index; a student cache entry edited, symlinked out or holding pickle
weights; a NaN loss; a plan passed as a dict: each is one :class:`SpectrumKDError`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import STUDENT, full_plan, make_cfg
from spectrumkd import SpectrumKDError
from spectrumkd.models import load_model
from spectrumkd.rundir import RunDir
from spectrumkd.train.checkpoint import TrainState
from spectrumkd.train.loop import train
from spectrumkd.train.sampler import PlanSampler

N, EPOCHS = 8, 2


def _train(examples, tokenizer, run_dir, **kw):
    cfg = make_cfg(curriculum={"epochs": EPOCHS}, loss={"mode": "sft"})
    return train(cfg, student=load_model(STUDENT), tokenizer=tokenizer, examples=examples[:N],
                 plan=full_plan(examples[:N], EPOCHS), run_dir=run_dir, **kw)


@pytest.fixture(scope="module")
def finished(examples, tokenizer, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished")
    _train(examples, tokenizer, run)
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    import shutil

    shutil.copytree(finished, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def _resume_refused(examples, tokenizer, run, *needles):
    with pytest.raises(SpectrumKDError) as exc:
        _train(examples, tokenizer, run, resume=True)
    assert "\n" not in str(exc.value)
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def _edit_state(run: Path, **changes) -> None:
    path = RunDir(run).latest_checkpoint() / "train_state.json"
    state = json.loads(path.read_text())
    state.update(changes)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(("changes", "needle"), [
    ({"epoch": 99, "finished": False}, "beyond the plan's 2 epochs"),
    ({"finished": False}, "finished = False at epoch 3"),
    ({"epoch": 1, "step_in_epoch": 50, "global_step": 60, "finished": False}, "step 50 of epoch 1"),
    ({"step_in_epoch": 3, "global_step": 1}, "step_in_epoch exceeds global_step"),
    ({"generation": 7}, "generation 7 is not the folder's"),
    ({"epoch": "2"}, "epoch = '2'"),
    ({"epoch_loss_sum": float("nan")}, "epoch_loss_sum"),
])
def test_edited_train_state_is_refused(examples, tokenizer, run, changes, needle):
    _edit_state(run, **changes)
    _resume_refused(examples, tokenizer, run, needle)


def test_nan_truncated_and_reshaped_weights_are_refused(examples, tokenizer, run):
    path = RunDir(run).latest_checkpoint() / "trainable.safetensors"
    good = path.read_bytes()
    weights = load_file(str(path))
    save_file({k: torch.full_like(v, math.nan) for k, v in weights.items()}, str(path))
    _resume_refused(examples, tokenizer, run, "NaN or infinite")
    name = next(iter(weights))
    save_file({**weights, name: weights[name][:1].clone()}, str(path))
    _resume_refused(examples, tokenizer, run, name, "shape")
    path.write_bytes(good[: len(good) // 2])
    _resume_refused(examples, tokenizer, run, "not a readable safetensors file")


def test_optimizer_state_that_does_not_fit_is_refused(examples, tokenizer, run):
    path = RunDir(run).latest_checkpoint() / "state.pt"
    blob = torch.load(path, weights_only=True)
    blob["optimizer"]["param_groups"] = []
    torch.save(blob, path)
    _resume_refused(examples, tokenizer, run, "state.pt", "not this run's optimizer")


def test_train_state_checks_in_isolation():
    with pytest.raises(SpectrumKDError, match="best_generation"):
        TrainState.from_dict({"generation": 2, "best_generation": 5}, source="s")
    with pytest.raises(SpectrumKDError, match="finished = True at epoch 2"):
        TrainState(epoch=2, finished=True, global_step=3).check_against([3, 3], source="s")
    TrainState(epoch=3, finished=True, global_step=6).check_against([3, 3], source="s")


def test_a_nan_loss_stops_the_run_with_one_line(examples, tokenizer, tmp_path):
    student = load_model(STUDENT)
    with torch.no_grad():
        next(student.parameters()).fill_(math.nan)
    cfg = make_cfg(curriculum={"epochs": 1}, loss={"mode": "sft"})
    with pytest.raises(SpectrumKDError, match="epoch 1, step 1: the loss is nan"):
        train(cfg, student=student, tokenizer=tokenizer, examples=examples[:N],
              plan=full_plan(examples[:N], 1), run_dir=tmp_path / "r")
    assert not RunDir(tmp_path / "r").has_checkpoint()


def test_a_plan_as_a_dict_is_one_line(examples):
    plan = full_plan(examples[:N], 1).to_dict()
    with pytest.raises(SpectrumKDError, match="expected a spectrumkd Plan, got dict"):
        PlanSampler(plan, [ex.id for ex in examples[:N]])
    from spectrumkd.train.hf_callback import CurriculumTrainerMixin

    with pytest.raises(SpectrumKDError, match="expected a spectrumkd Plan"):
        CurriculumTrainerMixin(plan=plan)


# --- teacher cache --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(examples, tokenizer, tmp_path_factory):
    from spectrumkd.data import Collator
    from spectrumkd.train.teacher_cache import write_teacher_cache

    folder = tmp_path_factory.mktemp("tc") / "cache"
    teacher = load_model("tiny-random:llama?layers=1&hidden=32&seed=2")
    write_teacher_cache(folder, teacher, examples[:4], Collator(tokenizer.pad_token_id),
                        vocab_size=len(tokenizer), k=8)
    return folder


@pytest.mark.parametrize("tamper", ["nan", "ids", "positive", "pickle", "cut", "index", "dtype"])
def test_tampered_teacher_cache_is_refused(cache_dir, tmp_path, tamper):
    import shutil

    from spectrumkd.train.teacher_cache import TeacherCache

    folder = tmp_path / "cache"
    shutil.copytree(cache_dir, folder)
    if tamper in ("nan", "positive"):
        lp = np.load(folder / "topk_logprobs.npy")
        lp[0, 0] = np.nan if tamper == "nan" else 3.0
        np.save(folder / "topk_logprobs.npy", lp)
    elif tamper == "ids":
        ids = np.load(folder / "topk_ids.npy")
        ids[1, 1] = 10**6
        np.save(folder / "topk_ids.npy", ids)
    elif tamper == "pickle":
        np.save(folder / "tail_logprob.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif tamper == "cut":
        data = (folder / "topk_ids.npy").read_bytes()
        (folder / "topk_ids.npy").write_bytes(data[: len(data) // 2])
    elif tamper == "index":
        index = json.loads((folder / "index.json").read_text())
        index["examples"][0][2] = 10**9
        (folder / "index.json").write_text(json.dumps(index))
    else:
        tail = np.load(folder / "tail_logprob.npy")
        np.save(folder / "tail_logprob.npy", tail.astype(np.float64))
    with pytest.raises(SpectrumKDError) as exc:
        TeacherCache.open(folder)
    assert "\n" not in str(exc.value)
    TeacherCache.open(cache_dir)  # the original still opens


# --- student cache entries ------------------------------------------------------------------------


@pytest.fixture
def entry(tmp_path):
    from spectrumkd.models import save_model, tiny_tokenizer
    from spectrumkd.train.student import CARD, _digests

    folder = tmp_path / "entry"
    save_model(load_model("tiny-random:llama?layers=1&hidden=32"), folder, tokenizer=tiny_tokenizer())
    (folder / CARD).write_text(json.dumps({"spectrumkd": "student", "files": _digests(folder)}))
    return folder


def test_an_intact_entry_passes_and_every_tampering_is_named(entry, tmp_path):
    from spectrumkd.train.student import CARD, _digests, entry_problem

    assert entry_problem(entry) is None
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert "model.safetensors was changed" in entry_problem(entry)
    weights.unlink()
    secret = tmp_path / "secret"
    secret.write_text("root:x")
    weights.symlink_to(secret)
    assert "link" in entry_problem(entry)
    weights.unlink()
    torch.save({}, entry / "pytorch_model.bin")
    card = json.loads((entry / CARD).read_text())
    (entry / CARD).write_text(json.dumps({**card, "files": _digests(entry)}))
    assert "not (only) safetensors" in entry_problem(entry)
    (entry / "pytorch_model.bin").unlink()
    (entry / "config.json").unlink()
    (entry / CARD).write_text(json.dumps({**card, "files": _digests(entry)}))
    assert entry_problem(entry) == "no config.json"
    (entry / CARD).write_text("{}")
    assert "no file digests" in entry_problem(entry)


def test_a_poisoned_cache_entry_is_built_again_not_delivered(tmp_path, monkeypatch, capsys):
    from spectrumkd.train.student import StudentConfig, build_student

    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    cfg = StudentConfig(teacher="tiny-random:llama?layers=4&hidden=32&seed=0", heal_steps=0,
                        method="every", every=2, calibration_rows=4)
    first = build_student(cfg, tmp_path / "a")
    good = (first / "model.safetensors").read_bytes()
    (entry,) = (tmp_path / "cache" / "students").iterdir()
    secret = tmp_path / "secret"
    secret.write_text("root:$6$not-for-students")
    (entry / "model.safetensors").unlink()
    (entry / "model.safetensors").symlink_to(secret)
    capsys.readouterr()
    again = build_student(cfg, tmp_path / "b")
    assert "is not intact (model.safetensors is a link" in capsys.readouterr().out
    assert (again / "model.safetensors").read_bytes() == good
    assert not (entry / "model.safetensors").is_symlink()


def test_student_out_over_its_teacher_is_refused_even_with_overwrite(tmp_path):
    from spectrumkd.models import save_model, tiny_tokenizer
    from spectrumkd.train.student import StudentConfig, build_student

    teacher = tmp_path / "teacher"
    save_model(load_model("tiny-random:llama?layers=4&hidden=32"), teacher, tokenizer=tiny_tokenizer())
    before = sorted(p.name for p in teacher.iterdir())
    for out in (teacher, teacher / "student"):
        with pytest.raises(SpectrumKDError, match="--teacher"):
            build_student(StudentConfig(teacher=str(teacher), heal_steps=0), out, overwrite=True)
    assert sorted(p.name for p in teacher.iterdir()) == before
