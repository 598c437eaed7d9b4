"""A run's random-window / curated-shuffle plan takes its order from the run's seed unless the
curriculum section sets shuffle_seed (each training seed of a control arm is its own order)."""

from spectrumkd.train.config import config_from_dict
from spectrumkd.train.pipeline import _check_user_plan, _make_plan

IDS = [f"e{i}" for i in range(20)]
SCORES = list(range(20))


def _cfg(seed, **curriculum):
    return config_from_dict({"teacher": {"spec": "tiny-random:llama"},
                             "student": {"spec": "tiny-random:llama"}, "seed": seed,
                             "curriculum": {"kind": "random-window", "epochs": 4,
                                            "warmup_epochs": 1, **curriculum}})


def test_unset_shuffle_seed_is_the_run_seed(tmp_path):
    a, b = _make_plan(_cfg(5), IDS, SCORES), _make_plan(_cfg(6), IDS, SCORES)
    assert a.params["shuffle_seed"] == 5 and b.params["shuffle_seed"] == 6
    assert a.epochs[0].ids != b.epochs[0].ids
    fixed = _make_plan(_cfg(6, shuffle_seed=5), IDS, SCORES)
    assert fixed.epochs == a.epochs
    _check_user_plan(_cfg(5), a, tmp_path / "plan.json")  # the run's own plan agrees
