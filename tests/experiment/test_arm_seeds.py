"""experiment.arm_seeds: control arms may run fewer training seeds than the main arms; one-seed tables."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.experiment import ExperimentConfig, Unit, grid


def _arms(**kinds):
    return {name: SimpleNamespace(curriculum=SimpleNamespace(kind=kind)) for name, kind in kinds.items()}


def test_grid_runs_each_arm_at_its_own_seeds():
    exp = ExperimentConfig(arms={"full": {}, "spectrumkd": {}, "random-window": {}}, seeds=[0, 1, 2],
                           arm_seeds={"random-window": [0, 1]}, references=["before"])
    units = grid(exp, _arms(full="none", spectrumkd="spectrumkd", **{"random-window": "random-window"}))
    arms = [(u.name, u.seed) for u in units if u.unit == "arm"]
    assert arms == [("full", 0), ("spectrumkd", 0), ("random-window", 0),
                    ("full", 1), ("spectrumkd", 1), ("random-window", 1),
                    ("full", 2), ("spectrumkd", 2)]
    assert units[-1] == Unit("reference", "before")


def test_seeds_outside_the_common_list_run_too():
    exp = ExperimentConfig(arms={"full": {}, "x": {}}, seeds=[0], arm_seeds={"x": [5]}, references=[])
    assert [(u.name, u.seed) for u in grid(exp, _arms(full="none", x="spectrumkd"))] == [("full", 0), ("x", 5)]


@pytest.mark.parametrize("arm_seeds, match", [
    ({"nope": [0]}, "not an arm"),
    ({"full": []}, "distinct integers"),
    ({"full": [1, 1]}, "distinct integers"),
    ({"full": ["a"]}, "distinct integers"),
    ({"full": [-1]}, "distinct integers"),
])
def test_bad_arm_seeds_are_refused(arm_seeds, match):
    with pytest.raises(SpectrumKDError, match=match):
        ExperimentConfig(arms={"full": {}}, arm_seeds=arm_seeds)


def test_one_seed_prints_no_spread():
    from spectrumkd.experiment import render_markdown

    row = {"n_seeds": 1, "rougeL_mean": 11.31, "rougeL_std": 0.0, "steps": 24}
    two = {**row, "n_seeds": 2, "rougeL_std": 0.5}
    results = {"baseline": "full", "arms": {"full": row, "x": two}, "references": {},
               "eval": {"data": "d", "limit": 2, "seeds": [10], "max_new_tokens": 8},
               "train_seeds": [0], "test": "t", "comparisons": []}
    text = render_markdown(results)
    assert "| full | 11.31 | 1 |" in text and "± 0.00" not in text
    assert "| x | 11.31 ± 0.50 | 2 |" in text
