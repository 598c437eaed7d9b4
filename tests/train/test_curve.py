"""The held-out curve: CE/KL/entropy rows in metrics.jsonl at the configured points, exact on resume."""

from __future__ import annotations

import json

import pytest

from conftest import STUDENT, TEACHER, full_plan, make_cfg
from spectrumkd.evaluate.panel import heldout
from spectrumkd.evaluate.teacher_logprobs import teacher_logprobs
from spectrumkd.models import load_model
from spectrumkd.rundir import RunDir
from spectrumkd.train.loop import train
from spectrumkd.train.validation import HeldOut

N_TRAIN, EPOCHS = 8, 2  # batch 4: 2 steps per epoch, 4 in all; 2 curve points → steps 0, 2, 4


def _cfg():
    return make_cfg(loss={"mode": "sft"}, curriculum={"epochs": EPOCHS},
                    validation={"curve_points": 2, "batch_size": 4}, save_every_steps=1)


@pytest.fixture(scope="module")
def rows(examples, tokenizer, tmp_path_factory):
    cached = teacher_logprobs(load_model(TEACHER), examples[12:16], pad_id=tokenizer.pad_token_id,
                              vocab_size=len(tokenizer), root=tmp_path_factory.mktemp("cache"))
    return HeldOut(examples[12:16], cached, tokenizer.pad_token_id)


def _train(examples, tokenizer, run_dir, rows, **kw):
    student = load_model(STUDENT)
    train(_cfg(), student=student, tokenizer=tokenizer, examples=examples[:N_TRAIN],
          plan=full_plan(examples[:N_TRAIN], EPOCHS), run_dir=run_dir, heldout=rows, **kw)
    return student


def _curve(run_dir):
    return [r for r in RunDir(run_dir).metrics() if r["kind"] == "curve"]


def test_curve_rows_at_the_configured_points(examples, tokenizer, tmp_path, rows):
    untrained = load_model(STUDENT)
    before = heldout(untrained, rows.examples, pad_id=rows.pad_id, teacher=rows.teacher)
    student = _train(examples, tokenizer, tmp_path, rows)
    curve = _curve(tmp_path)
    assert [r["step"] for r in curve] == [0, 2, 4]
    assert {"heldout_ce", "heldout_kl", "entropy", "rows", "tokens"} <= set(curve[0])
    assert curve[0]["heldout_ce"] == pytest.approx(before["heldout_ce"], rel=1e-6)
    assert curve[0]["heldout_kl"] == pytest.approx(before["heldout_kl"], rel=1e-6)
    after = heldout(student, rows.examples, pad_id=rows.pad_id, teacher=rows.teacher)
    assert curve[-1]["heldout_kl"] == pytest.approx(after["heldout_kl"], rel=1e-6)
    assert curve[-1]["heldout_ce"] < curve[0]["heldout_ce"]  # SFT on similar rows helps
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "curve" and lines[0]["step"] == 0  # before the first step


def test_resume_neither_duplicates_nor_loses_curve_rows(examples, tokenizer, tmp_path, rows):
    _train(examples, tokenizer, tmp_path / "a", rows)
    want = _curve(tmp_path / "a")

    def interrupt(row):
        if row["step"] == 3:  # after the step-2 point, before the step-4 one
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(examples, tokenizer, tmp_path / "b", rows, on_step=interrupt)
    assert [r["step"] for r in _curve(tmp_path / "b")] == [0, 2]
    _train(examples, tokenizer, tmp_path / "b", rows, resume=True)
    got = _curve(tmp_path / "b")
    assert [r["step"] for r in got] == [0, 2, 4]
    for g, w in zip(got, want):
        assert g["heldout_kl"] == pytest.approx(w["heldout_kl"], rel=1e-5)

    def interrupt_at_point(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(examples, tokenizer, tmp_path / "c", rows, on_step=interrupt_at_point)
    metrics = tmp_path / "c" / "metrics.jsonl"  # as if the interrupt had cut the step-2 point short
    kept = [x for x in metrics.read_text().splitlines()
            if not (json.loads(x)["kind"] == "curve" and json.loads(x)["step"] == 2)]
    metrics.write_text("\n".join(kept) + "\n")
    _train(examples, tokenizer, tmp_path / "c", rows, resume=True)
    got = _curve(tmp_path / "c")
    assert [r["step"] for r in got] == [0, 2, 4]  # the lost point is recomputed at the start
    assert got[1]["heldout_ce"] == pytest.approx(want[1]["heldout_ce"], rel=1e-5)
