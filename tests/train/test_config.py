"""Run config: YAML + dotted overrides, closest-key errors, cross-field checks, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.train.config import load_config, save_config

REPO = Path(__file__).resolve().parents[2]
BASE = {"teacher": {"spec": "tiny-random:llama"}, "student": {"spec": "tiny-random:llama"}}


def test_overrides_convert_types_and_resolve_mode_defaults():
    cfg = load_config(None, ["loss.divergence=rkl", "optim.lr=1e-4", "optim.betas=[0.8, 0.9]",
                             "seed=3", "lora.enabled=true"], **BASE)
    assert cfg.loss.divergence == "rkl" and cfg.loss.ce_weight == 0.3
    assert cfg.optim.lr == 1e-4 and cfg.optim.betas == [0.8, 0.9] and cfg.seed == 3
    assert cfg.lora.enabled is True


@pytest.mark.parametrize(("override", "closest"), [
    ("loss.divergense=rkl", "loss.divergence"),
    ("optim.learning_rate=1e-3", "optim.lr"),
    ("curriculum.warmup=2", "curriculum.warmup_epochs"),
])
def test_unknown_key_names_the_closest_valid_key(override, closest):
    with pytest.raises(SpectrumKDError, match=f"did you mean '{closest}'"):
        load_config(None, [override], **BASE)


def test_unknown_key_in_yaml_names_file_and_closest_key(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({**BASE, "optim": {"batchsize": 4}}))
    with pytest.raises(SpectrumKDError, match=r"run.yaml.*optim.batchsize.*optim.batch_size"):
        load_config(p)


@pytest.mark.parametrize(("sections", "message"), [
    ({"loss": {"mode": "sft", "divergence": "fkl"}}, "takes no divergence"),
    ({"loss": {"divergence": "kl"}}, "not one of"),
    ({"curriculum": {"epochs": 2, "warmup_epochs": 1}}, "warmup_epochs"),
    ({"teacher_cache": {"enabled": True}, "loss": {"mode": "gkd"}}, "teacher_cache"),
    ({"optim": {"lr": "fast"}}, "optim.lr"),
])
def test_cross_field_and_type_errors(sections, message):
    with pytest.raises(SpectrumKDError, match=message):
        load_config(None, **{**BASE, **sections})


def test_saved_config_holds_every_default_and_loads_back_equal(tmp_path):
    cfg = load_config(None, ["loss.mode=gkd"], **BASE)
    path = save_config(cfg, tmp_path / "config.yaml")
    text = yaml.safe_load(path.read_text())
    assert text["loss"]["gkd_lambda"] == 0.5 and text["teacher_cache"]["k"] == 64
    assert load_config(path) == cfg


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_and_starts_with_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# spectrumkd ") and f"configs/{path.name}" in first
    if "distill" in first:
        load_config(path)


def _numeric_keys():
    import dataclasses
    import typing

    from spectrumkd.train.config import RunConfig

    out = []
    for section, sect_type in typing.get_type_hints(RunConfig).items():
        if not dataclasses.is_dataclass(sect_type):
            kinds = {section: sect_type}
        else:
            kinds = {f"{section}.{k}": t for k, t in typing.get_type_hints(sect_type).items()}
        for key, tp in kinds.items():
            args = set(typing.get_args(tp)) or {tp}
            if float in args or list[float] in args:
                out.append((key, "list" if list[float] in args else "float"))
            elif int in args and bool not in args:
                out.append((key, "int"))
    return out


NUMERIC = _numeric_keys()


def test_every_numeric_field_is_found():
    keys = {k for k, _ in NUMERIC}
    assert {"optim.lr", "loss.ce_weight", "curriculum.tau0", "optim.betas", "seed",
            "save_every_steps", "curriculum.buckets"} <= keys and len(keys) > 30


@pytest.mark.parametrize(("key", "kind"), NUMERIC, ids=[k for k, _ in NUMERIC])
def test_every_numeric_field_refuses_nan_or_a_negative_value(key, kind):
    """NaN for floats (lists too), -1 for integers: refused at load, naming the field."""
    value = {"float": ".nan", "list": "[.nan, 0.5]", "int": "-1"}[kind]
    with pytest.raises(SpectrumKDError, match=key.split(".")[-1]):
        load_config(None, [f"{key}={value}"], **BASE)
    if kind == "float":
        with pytest.raises(SpectrumKDError, match=key.split(".")[-1]):
            load_config(None, [f"{key}=.inf"], **BASE)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=.nan", "optim.lr"), ("loss.ce_weight=.nan", "loss.ce_weight"),
    ("curriculum.tau0=-1", "curriculum.tau0"), ("curriculum.tau0=0", "curriculum.tau0"),
    ("output_dir=''", "output_dir is empty"), ("curriculum.lambda_a=0.6", "lambda_a"),
    ("optim.lr=0", "optim.lr"),
])
def test_issue_11_config_probes(override, message):
    with pytest.raises(SpectrumKDError, match=message):
        load_config(None, [override], **BASE)
