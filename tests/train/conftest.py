"""Fixtures for the trainer tests: tiny random llama models (2 layers, hidden 64) and short examples."""

from __future__ import annotations

import pytest

from spectrumkd.curriculum import make_plan
from spectrumkd.data import build_examples
from spectrumkd.models import load_model, tiny_tokenizer
from spectrumkd.train.config import load_config

STUDENT = "tiny-random:llama?layers=2&hidden=64&seed=1"
TEACHER = "tiny-random:llama?layers=2&hidden=64&seed=2"

WORDS = "the cat sat on a mat while two dogs ran in the park and birds sang songs".split()


def records(n: int = 16) -> list[dict]:
    """Short synthetic instruction records with distinct ids and varied lengths."""
    out = []
    for i in range(n):
        instr = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 4))
        answer = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(2 + i % 5))
        out.append({"id": f"ex{i}", "instruction": f"Repeat: {instr}", "output": f" {answer}"})
    return out


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def examples(tokenizer):
    exs, dropped = build_examples(records(16), tokenizer, max_length=128)
    assert not dropped
    return exs


def make_cfg(**sections):
    """A RunConfig for in-process tests (no files), updated section by section."""
    base = {
        "teacher": {"spec": TEACHER},
        "student": {"spec": STUDENT},
        "optim": {"lr": 3e-3, "batch_size": 4, "grad_clip": 1.0, "schedule": "constant"},
        "curriculum": {"kind": "full", "epochs": 3},
        "progress": False,
    }
    for name, value in sections.items():
        if isinstance(value, dict):
            base[name] = {**base.get(name, {}), **value}
        else:
            base[name] = value
    return load_config(None, **base)


def full_plan(examples, epochs: int = 3):
    ids = [ex.id for ex in examples]
    return make_plan("full", ids, [float(i) for i in range(len(ids))], epochs=epochs,
                     temperature_schedule="constant")


def spectrum_plan(examples, epochs: int = 4):
    ids = [ex.id for ex in examples]
    scores = [float(len(ex.input_ids)) + 0.01 * i for i, ex in enumerate(examples)]
    return make_plan("spectrumkd", ids, scores, epochs=epochs, warmup=1, lambda_a=0.25, lambda_b=0.125)


@pytest.fixture
def student():
    return load_model(STUDENT)


@pytest.fixture
def teacher():
    return load_model(TEACHER)
