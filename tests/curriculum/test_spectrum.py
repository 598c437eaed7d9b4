import numpy as np
import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import build_spectrum


def test_twenty_scores_zones_by_hand():
    ids = [f"x{i}" for i in range(20)]
    scores = list(range(20, 0, -1))  # x19 easiest
    s = build_spectrum(ids, scores, 0.1, 0.1)
    assert (s.n_early, s.n_excluded, s.window_size) == (2, 2, 16)
    z = s.zones()
    assert z["early"] == ["x19", "x18"]
    assert z["excluded"] == ["x1", "x0"]
    assert z["late"] == ["x3", "x2"]
    assert len(z["continuous"]) == 14
    assert s.zone_bounds() == {"early": (0, 2), "continuous": (2, 16), "late": (16, 18),
                               "excluded": (18, 20)}


def test_stable_sort_keeps_input_order_on_ties():
    s = build_spectrum(["a", "b", "c", "d"], [1.0, 0.5, 1.0, 0.5], 0.0, 0.0)
    assert s.ids == ["b", "d", "a", "c"]


def test_floor_rule_counts_decimal_lambda_as_typed():
    s = build_spectrum(list(range(100)), np.arange(100.0), 0.29, 0.0)
    assert s.n_early == 29
    s = build_spectrum(list(range(7)), np.arange(7.0), 0.15, 0.15)
    assert (s.n_early, s.n_excluded) == (1, 1)


def test_window_difficulties_are_cumulative_sums():
    s = build_spectrum(list(range(20)), list(range(1, 21)), 0.1, 0.1)
    assert s.window_difficulties().tolist() == [136.0, 152.0, 168.0]


@pytest.mark.parametrize(
    "la, lb, msg",
    [(-0.1, 0.1, "lambda_a"), (0.1, 1.5, "lambda_b"), (0.4, 0.3, "2·lambda_a"),
     (float("nan"), 0.1, "lambda_a")],
)
def test_bad_lambdas(la, lb, msg):
    with pytest.raises(SpectrumKDError, match=msg):
        build_spectrum(list(range(10)), np.arange(10.0), la, lb)


def test_empty_window_is_an_error():
    with pytest.raises(SpectrumKDError, match="window size"):
        build_spectrum(list(range(4)), np.arange(4.0), 0.0, 1.0)


def test_nan_scores_name_the_ids():
    with pytest.raises(SpectrumKDError, match="'b'"):
        build_spectrum(["a", "b", "c"], [1.0, float("nan"), 2.0])


def test_duplicate_ids():
    with pytest.raises(SpectrumKDError, match="duplicate ids 'a'"):
        build_spectrum(["a", "a", "c"], [1.0, 3.0, 2.0])
