"""An experiment override typo suggests a key the experiment command accepts (issue 19 #16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.experiment import load_experiment

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@pytest.mark.parametrize("typo, suggestion", [
    ("run.optim.lrr=3e-4", "run.optim.lr"),
    ("experiment.seedz=[0]", "experiment.seeds"),
])
def test_the_suggested_key_is_accepted(typo, suggestion):
    with pytest.raises(SpectrumKDError) as exc:
        load_experiment(DEMO, [typo])
    assert f"did you mean {suggestion!r}?" in str(exc.value)
    load_experiment(DEMO, [f"{suggestion}={typo.partition('=')[2]}"])  # accepted as suggested
