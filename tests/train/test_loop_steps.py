"""The loop's named steps: the sections form of the loop, validation's shared micro-loss, size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import STUDENT, TEACHER, full_plan, make_cfg
from spectrumkd.curriculum import make_plan
from spectrumkd.models import load_model
from spectrumkd.train.config import LossConfig, OptimConfig, ValidationConfig
from spectrumkd.train.loop import LoopConfig, RunOptions, run_loop, train
from spectrumkd.train.validation import validate

TRAIN = Path(__file__).resolve().parents[2] / "src" / "spectrumkd" / "train"


def test_the_sections_form_equals_the_run_config_form(examples, tokenizer):
    cfg = make_cfg(loss={"divergence": "jsd", "ce_weight": 0.5}, optim={"batch_size": 2},
                   curriculum={"epochs": 2}, seed=3)
    plan = full_plan(examples[:6], 2)
    via_cfg = train(cfg, student=load_model(STUDENT), tokenizer=tokenizer, examples=examples[:6],
                    plan=plan, teacher=load_model(TEACHER))
    sections = LoopConfig(
        loss=LossConfig(divergence="jsd", ce_weight=0.5),
        optim=OptimConfig(lr=3e-3, batch_size=2, grad_clip=1.0, schedule="constant"),
        validation=ValidationConfig(), options=RunOptions(seed=3, progress=False),
    )  # fmt: skip
    assert LoopConfig.from_run_config(cfg) == sections
    direct = run_loop(sections, student=load_model(STUDENT), tokenizer=tokenizer,
                      examples=examples[:6], plan=plan, teacher=load_model(TEACHER))
    assert len(direct.losses) == 6 and direct.losses == via_cfg.losses


@pytest.mark.parametrize("mode", ["kd", "sft"])
def test_validation_loss_is_the_training_objective(examples, tokenizer, mode):
    """Step 1's loss (before any update) and validation of the untouched student on the same
    examples at the same τ are one objective computed once: they agree to float rounding."""
    ids = [ex.id for ex in examples[:4]]
    plan = make_plan("full", ids, [0.0] * 4, epochs=1, tau0=2.0, temperature_schedule="constant")
    assert plan.epoch(1).temperature == 2.0
    loss = {"mode": "kd", "divergence": "srkl", "ce_weight": 0.2} if mode == "kd" else {"mode": "sft"}
    cfg = make_cfg(loss=loss, optim={"batch_size": 4}, curriculum={"epochs": 1})
    teacher = load_model(TEACHER) if mode == "kd" else None
    trained = train(cfg, student=load_model(STUDENT), tokenizer=tokenizer, examples=examples[:4],
                    plan=plan, teacher=teacher)
    val = validate(load_model(STUDENT), tokenizer, examples[:4], loss=cfg.loss, teacher=teacher,
                   temperature=2.0, max_new_tokens=1, batch_size=4)
    assert val["val_loss"] == pytest.approx(trained.losses[0], rel=1e-5)
    if mode == "kd":  # the KD term really counts (τ² · srkl), so the two are not just CE
        assert abs(val["val_loss"] - val["val_ce"]) > 1e-3
    else:
        assert val["val_loss"] == val["val_ce"]


def test_no_function_in_the_train_package_is_longer_than_80_lines():
    long = []
    for path in sorted(TRAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long


def test_train_reads_as_named_steps_without_closures():
    """``run_loop`` calls prepare → run_epoch, ``run_epoch`` calls train_step/after_step/end_epoch,
    and no function of loop.py defines a function inside itself."""
    tree = ast.parse((TRAIN / "loop.py").read_text(encoding="utf-8"))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def calls(name):
        return {c.func.id for c in ast.walk(funcs[name]) if isinstance(c, ast.Call)
                and isinstance(c.func, ast.Name)}

    assert {"prepare", "run_epoch", "save_on_interrupt"} <= calls("run_loop")
    assert {"train_step", "after_step", "end_epoch"} <= calls("run_epoch")
    assert "run_loop" in calls("train")
    nested = [f"{outer.name}.{inner.name}" for outer in funcs.values() for inner in ast.walk(outer)
              if inner is not outer and isinstance(inner, (ast.FunctionDef, ast.Lambda))]
    assert not nested


def test_distill_with_the_teacher_cache_trains_without_the_teacher_in_memory(tmp_path, monkeypatch):
    import gc
    import weakref

    from spectrumkd.train import loop, pipeline

    seen = {}
    load = pipeline.load_run_models

    def remember_teacher(cfg, **kw):
        tokenizer, student, teacher = load(cfg, **kw)
        seen["teacher"] = weakref.ref(teacher)
        return tokenizer, student, teacher

    def check_then_train(*args, **kw):
        gc.collect()
        seen["alive_in_training"] = seen["teacher"]() is not None
        return train(*args, **kw)

    monkeypatch.setattr(pipeline, "load_run_models", remember_teacher)
    monkeypatch.setattr(loop, "train", check_then_train)
    cfg = make_cfg(
        teacher={"spec": "tiny-random:llama?layers=1&hidden=32&seed=2"},
        student={"spec": "tiny-random:llama?layers=1&hidden=32&seed=1"},
        data={"source": "spectrumkd:dolly/train.jsonl", "limit": 6, "max_length": 256},
        curriculum={"kind": "full", "epochs": 1, "batch_tokens": 2048},
        teacher_cache={"enabled": True, "k": 8}, output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    result = pipeline.distill(cfg)
    assert result.losses and seen["alive_in_training"] is False
