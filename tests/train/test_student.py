"""spectrumkd student on a tiny random teacher: card, cache, healing, CLI, refusals."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from spectrumkd import SpectrumKDError
from spectrumkd.train.student import StudentConfig, build_student

TEACHER = "tiny-random:llama?layers=4&hidden=32&seed=0"
SMALL = dict(teacher=TEACHER, calibration_rows=6, heal_steps=2, heal_batch_size=2, refine=2,
             refine_rows=3, max_prompt_length=512, max_length=768)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_writes_a_loadable_folder_and_a_card(tmp_path, cache, capsys):
    out = build_student(StudentConfig(**SMALL), tmp_path / "student")
    card = json.loads((out / "student.json").read_text())
    assert card["num_layers"] == {"teacher": 4, "student": 2}
    assert len(card["kept_layers"]) == 2 and set(card["kept_layers"]) | set(card["removed_layers"]) == {0, 1, 2, 3}
    assert card["method"] == "angular" and len(card["importance"]) == 3  # blocks of 2 in 4 layers
    assert set(card["ce"]) == {"teacher", "pruned", "healed"}
    assert all(isinstance(v, float) and v > 0 for v in card["ce"].values())
    assert card["healing"]["steps"] == 2 and card["healing"]["n_rows"] == 4
    assert card["command"].startswith("spectrumkd student --teacher") and "--heal-steps 2" in card["command"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert capsys.readouterr().out.count("candidate: without layers") == 2

    # the build is cached: a second call reuses it and copies it to another folder
    again = build_student(StudentConfig(**SMALL), tmp_path / "copy")
    assert "reusing the cached build" in capsys.readouterr().out
    assert json.loads((again / "student.json").read_text()) == card
    # an existing non-empty folder is refused without overwrite
    with pytest.raises(SpectrumKDError, match="--overwrite"):
        build_student(StudentConfig(**SMALL), tmp_path / "student")


def test_heal_steps_zero_skips_healing_and_every_k(tmp_path, cache):
    out = build_student(StudentConfig(**{**SMALL, "heal_steps": 0, "method": "every", "every": 2}),
                        tmp_path / "s")
    card = json.loads((out / "student.json").read_text())
    assert card["kept_layers"] == [0, 2] and card["healing"] is None and card["ce"]["healed"] is None


def test_config_errors_are_one_line():
    with pytest.raises(SpectrumKDError, match="unknown method 'random'"):
        StudentConfig(method="random")
    with pytest.raises(SpectrumKDError, match="heal_lr"):
        StudentConfig(heal_lr=float("nan"))
    with pytest.raises(SpectrumKDError, match="heal_steps"):
        StudentConfig(heal_steps=-1)


def test_cli_round_trip(tmp_path, cache):
    env = {"SPECTRUMKD_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "spectrumkd.cli", "student", "--teacher", TEACHER, "--out",
           str(tmp_path / "cli"), "--heal-steps", "0", "--calibration-rows", "4", "--refine", "1",
           "--max-prompt-length", "512", "--max-length", "768"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kept layers" in r.stdout and (tmp_path / "cli" / "student.json").is_file()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--overwrite" in r.stderr


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(tmp_path, cache, capsys, monkeypatch):
    import torch

    import spectrumkd.train.loop as loop_module
    from spectrumkd.train import student as student_module

    cfg = StudentConfig(**{**SMALL, "heal_steps": 4})
    monkeypatch.setattr(student_module, "HEAL_SAVES", 4)  # a checkpoint after every step
    whole = build_student(cfg, tmp_path / "whole", use_cache=False)
    ref = AutoModelForCausalLM.from_pretrained(whole).state_dict()
    capsys.readouterr()

    real_train = loop_module.train

    def interrupted(*args, **kwargs):
        def stop(row):
            if row["step"] == 2:
                raise KeyboardInterrupt
        return real_train(*args, **kwargs, on_step=stop)

    monkeypatch.setattr(loop_module, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_student(cfg, tmp_path / "cut", use_cache=False)
    assert list((cache / "students").glob("*.work/choice.json"))  # the layer choice is kept
    monkeypatch.setattr(loop_module, "train", real_train)
    resumed = build_student(cfg, tmp_path / "resumed", use_cache=False)
    out = capsys.readouterr().out
    assert "resuming the healing run" in out and "(from " in out  # no second importance pass
    got = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0)
    assert not list((cache / "students").glob("*.work"))


def test_student_help_lists_the_choices_the_build_accepts():
    from dataclasses import fields

    from spectrumkd.losses.objective import DIVERGENCES
    from spectrumkd.models.importance import METHODS
    from spectrumkd.train.student import StudentConfig

    choices = {f.name: f.metadata.get("choices") for f in fields(StudentConfig)}
    assert choices["method"] == METHODS and choices["heal_divergence"] == DIVERGENCES


def test_every_student_option_has_a_help_text():
    import argparse

    from spectrumkd.commands import student

    parser = argparse.ArgumentParser()
    student.add_arguments(parser)
    for action in parser._actions:
        text = (action.help or "").split("(default:")[0].strip()
        assert text and "``" not in text, action.option_strings
