import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import make_plan

IDS = [f"e{i}" for i in range(12)]
SCORES = list(range(12))  # already sorted: e0 easiest


def test_full_every_epoch():
    plan = make_plan("full", IDS, SCORES, epochs=3)
    assert all(e.ids == IDS for e in plan.epochs)
    assert plan.zones["excluded"] == [] and plan.zones["continuous"] == IDS


def test_static_easiest_80_and_band():
    plan = make_plan("static", IDS, SCORES, epochs=2, static_low=0.0, static_high=0.8)
    assert plan.epochs[0].ids == IDS[:9]  # floor(0.8·12) = 9
    band = make_plan("static", IDS, SCORES, epochs=2, static_low=0.1, static_high=0.9)
    assert band.epochs[1].ids == IDS[1:10]
    assert band.zones["excluded"] == ["e0", "e10", "e11"]
    with pytest.raises(SpectrumKDError, match="empty"):
        make_plan("static", IDS, SCORES, epochs=2, static_low=0.5, static_high=0.5)


def test_babystep_cumulative_buckets():
    plan = make_plan("babystep", IDS, SCORES, epochs=6, buckets=3)
    assert plan.subset_sizes() == [4, 4, 8, 8, 12, 12]
    assert plan.epochs[2].ids == IDS[:8]
    tail = make_plan("babystep", IDS, SCORES, epochs=5, buckets=2, epochs_per_stage=2)
    assert tail.subset_sizes() == [6, 6, 12, 12, 12]


def test_onepass_one_bucket_after_another():
    plan = make_plan("onepass", IDS, SCORES, epochs=3, buckets=3)
    assert [e.ids for e in plan.epochs] == [IDS[:4], IDS[4:8], IDS[8:]]
    assert [e.start for e in plan.epochs] == [0, 4, 8]
    with pytest.raises(SpectrumKDError, match="= 4 epochs"):
        make_plan("onepass", IDS, SCORES, epochs=5, buckets=2, epochs_per_stage=2)


def test_baselines_use_the_temperature_schedule():
    plan = make_plan("full", IDS, SCORES, epochs=3, tau0=1.0, taun=2.0)
    assert [e.temperature for e in plan.epochs] == [1.0, 1.5, 2.0]
    const = make_plan("full", IDS, SCORES, epochs=3, temperature_schedule="constant", tau0=1.5)
    assert [e.temperature for e in const.epochs] == [1.5, 1.5, 1.5]


def test_unknown_kind():
    with pytest.raises(SpectrumKDError, match="unknown curriculum"):
        make_plan("random", IDS, SCORES)
