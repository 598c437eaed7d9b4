"""The one YAML→dataclass engine (spectrumkd.configfile) behind the run and experiment configs."""

from __future__ import annotations

import copy

import pytest
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.configfile import apply_overrides, build, field_keys, read_mapping
from spectrumkd.experiment import ExperimentConfig, load_experiment, student_config
from spectrumkd.train.config import RunConfig

RUN = {"teacher": {"spec": "tiny-random:llama"}, "student": {"spec": "tiny-random:llama"}}


def _experiment(tmp_path, experiment=None, run=None):
    path = tmp_path / "exp.yaml"
    body = {"experiment": {"student": None, **(experiment or {})}, "run": {**RUN, **(run or {})}}
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_both_configs_share_the_engine_and_its_messages(tmp_path):
    run_err = pytest.raises(SpectrumKDError, match=r"run\.yaml: unknown keys \['batchsize'\] "
                            r"\(optim\.batchsize\); did you mean 'optim\.batch_size'\?")  # fmt: skip
    with run_err:
        build(RunConfig, {"optim": {"batchsize": 4}}, where="run.yaml")
    with pytest.raises(SpectrumKDError, match=r"experiment: unknown keys \['limt'\] \(eval\.limt\); "
                       r"did you mean 'eval\.limit'\?"):  # fmt: skip
        load_experiment(_experiment(tmp_path, {"eval": {"limt": 3}}))


def test_every_unknown_key_of_a_mapping_is_named():
    with pytest.raises(SpectrumKDError, match=r"unknown keys \['lrr', 'betaz'\]"):
        build(RunConfig, {"optim": {"lrr": 1, "betaz": [0.9, 0.9]}})


def test_experiment_values_are_converted_to_their_annotations(tmp_path):
    exp, _, _ = load_experiment(_experiment(tmp_path), ["experiment.eval.limit=4.0",
                                                        "experiment.seeds=[3, 4]"])  # fmt: skip
    assert exp.eval.limit == 4 and isinstance(exp.eval.limit, int) and exp.seeds == [3, 4]
    with pytest.raises(SpectrumKDError, match=r"eval\.limit: expected int, got 'many'"):
        load_experiment(_experiment(tmp_path), ["experiment.eval.limit=many"])
    with pytest.raises(SpectrumKDError, match=r"arms\.full: expected a mapping, got 3"):
        load_experiment(_experiment(tmp_path, {"arms": {"full": 3, "spectrumkd": {}}}))


def test_the_student_to_build_is_checked_when_the_experiment_loads(tmp_path):
    path = _experiment(tmp_path, {"student": {"keep": 12, "heal_lr": "1e-4"}})
    exp, base, _ = load_experiment(path)
    cfg = student_config(exp, base)
    assert (cfg.teacher, cfg.keep, cfg.heal_lr) == ("tiny-random:llama", 12, 1e-4)
    exp, base, _ = load_experiment(path, ["experiment.student.keep=8"])
    assert student_config(exp, base).keep == 8
    with pytest.raises(SpectrumKDError, match="keep must be >= 1"):
        load_experiment(path, ["experiment.student.keep=0"])
    with pytest.raises(SpectrumKDError, match=r"experiment\.student: unknown keys \['keeep'\].*'keep'"):
        load_experiment(_experiment(tmp_path, {"student": {"keeep": 12}}))


def test_overrides_below_a_mapping_field_go_one_level_deep():
    data = {"arms": {"full": {"curriculum.kind": "none"}}}
    out = apply_overrides(ExperimentConfig, data, ["arms.spectrumkd={}", "student.keep=3"])
    assert out["arms"] == {"full": {"curriculum.kind": "none"}, "spectrumkd": {}}
    assert out["student"] == {"keep": 3} and data == {"arms": {"full": {"curriculum.kind": "none"}}}
    with pytest.raises(SpectrumKDError, match=r"unknown keys \['keep'\] \(student\.x\.keep\)"):
        apply_overrides(ExperimentConfig, data, ["student.x.keep=3"])
    with pytest.raises(SpectrumKDError, match="expected key=value"):
        apply_overrides(ExperimentConfig, data, ["seeds"])


def test_run_sections_of_an_experiment_resolve_data_paths_like_distill(tmp_path):
    (tmp_path / "rows.jsonl").write_text("{}\n", encoding="utf-8")
    path = _experiment(tmp_path, run={"data": {"source": "rows.jsonl"}})
    _, base, arms = load_experiment(path)
    assert base.data.source == str(tmp_path / "rows.jsonl")
    assert {cfg.data.source for cfg in arms.values()} == {base.data.source}


def test_read_mapping_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n", encoding="utf-8")
    with pytest.raises(SpectrumKDError, match=r"bad\.yaml: not valid YAML"):
        read_mapping(bad)
    bad.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(SpectrumKDError, match=r"bad\.yaml: expected a mapping at the top level"):
        read_mapping(bad)
    with pytest.raises(SpectrumKDError, match=r"missing\.yaml"):
        read_mapping(tmp_path / "missing.yaml")
    assert read_mapping(_touch(tmp_path / "empty.yaml")) == {}


def _touch(path):
    path.write_text("", encoding="utf-8")
    return path


def test_field_keys_walk_nested_sections():
    keys = field_keys(RunConfig)
    assert "loss.divergence" in keys and "seed" in keys and "loss" not in keys
    assert copy.copy(keys) == list(dict.fromkeys(keys))  # each key once
