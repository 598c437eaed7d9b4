"""The control arms (issue 18): random-window and curated-shuffle against hand-worked plans.

Scores 1..20 on ids e0..e19 (already sorted), λa = λb = 0.1: n_early = n_excluded = 2, window
M = 16; 6 epochs with 1 warm-up give SpectrumKD's starts [0, 0, 0, 1, 1, 2] (schedule.py works
them out) and τ 1.0, 1.2, ..., 2.0.
"""

import numpy as np
import pytest

from spectrumkd.curriculum import Plan, make_plan

IDS = [f"e{i}" for i in range(20)]
SCORES = list(range(1, 21))
STARTS = [0, 0, 0, 1, 1, 2]
TAUS = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]


def _plan(kind, **kw):
    return make_plan(kind, IDS, SCORES, epochs=6, warmup=1, **kw)


def test_random_window_is_spectrumkd_over_a_seeded_random_order():
    plan = _plan("random-window", shuffle_seed=3)
    order = [IDS[p] for p in np.random.default_rng(3).permutation(20)]
    assert plan.subset_sizes() == [16] * 6
    assert [e.start for e in plan.epochs] == STARTS == [e.start for e in _plan("spectrumkd").epochs]
    assert [e.temperature for e in plan.epochs] == pytest.approx(TAUS)
    assert [e.ids for e in plan.epochs] == [order[w:w + 16] for w in STARTS]
    # the zones are cut from the random order: the two "excluded" are random, not the hardest
    assert plan.zones["excluded"] == order[18:] == ["e5", "e19"]
    assert plan.zones["early"] == order[:2] and plan.zones["late"] == order[16:18]
    assert plan.epochs[0].total_difficulty == sum(int(i[1:]) + 1 for i in order[:16])
    assert plan.params["curriculum"] == "random-window" and plan.params["shuffle_seed"] == 3
    assert plan.params["window_size"] == 16


def test_random_window_seeds():
    assert _plan("random-window", shuffle_seed=3) == _plan("random-window", shuffle_seed=3)
    assert _plan("random-window", shuffle_seed=4).epochs[0].ids != _plan(
        "random-window", shuffle_seed=3).epochs[0].ids
    assert _plan("random-window").params["shuffle_seed"] == 0  # unset: 0 outside a run


def test_curated_shuffle_draws_the_window_size_from_the_curated_pool_each_epoch():
    plan = _plan("curated-shuffle", shuffle_seed=3)
    pool = IDS[:18]  # Excluded (e18, e19: the hardest 10%) dropped
    rng = np.random.default_rng(3)
    expected = [[pool[p] for p in rng.permutation(18)[:16]] for _ in range(6)]
    assert [e.ids for e in plan.epochs] == expected
    assert plan.subset_sizes() == [16] * 6  # SpectrumKD's window size: the same step budget
    assert [e.temperature for e in plan.epochs] == pytest.approx(TAUS)
    assert [e.start for e in plan.epochs] == [0] * 6
    assert plan.zones == {"early": [], "continuous": pool, "late": [], "excluded": ["e18", "e19"]}
    assert len({tuple(sorted(e.ids)) for e in plan.epochs}) > 1  # reshuffled each epoch
    for e in plan.epochs:
        assert e.total_difficulty == sum(int(i[1:]) + 1 for i in e.ids)
    assert plan.params["curriculum"] == "curated-shuffle"


def test_curated_shuffle_without_early_zone_is_the_whole_pool_every_epoch():
    plan = make_plan("curated-shuffle", IDS, SCORES, epochs=3, warmup=1, lambda_a=0.0,
                     lambda_b=0.25)
    assert all(sorted(e.ids) == sorted(IDS[:15]) for e in plan.epochs)
    assert plan.zones["excluded"] == IDS[15:]


@pytest.mark.parametrize("kind", ["random-window", "curated-shuffle"])
def test_control_plans_round_trip_and_validate(kind):
    plan = _plan(kind, shuffle_seed=1)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_tau_only_arm_is_full_with_the_linear_schedule():
    plan = make_plan("full", IDS, SCORES, epochs=5)
    assert plan.subset_sizes() == [20] * 5
    assert [e.temperature for e in plan.epochs] == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert plan.params["temperature_schedule"] == "linear"
