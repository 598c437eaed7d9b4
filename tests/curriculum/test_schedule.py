import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import build_spectrum, linear_temperatures, make_plan, window_starts


@pytest.fixture
def twenty():
    return build_spectrum(list(range(20)), list(range(1, 21)), 0.1, 0.1)


def test_hand_worked_adaptive(twenty):
    # td(0)=136, td(1)=152, td(2)=168; epochs 3,4,5 target 144, 152, 160.
    assert window_starts(twenty, 6, 1) == [0, 0, 0, 1, 1, 2]


def test_hand_worked_linear(twenty):
    # round_half_up(t·2/4) for t = 1, 2, 3 → 1, 1, 2 (0.5 rounds up).
    assert window_starts(twenty, 6, 1, step="linear") == [0, 0, 1, 1, 2, 2]


def test_hand_worked_reverse(twenty):
    assert window_starts(twenty, 6, 1, direction="reverse") == [2, 2, 1, 1, 0, 0]
    assert window_starts(twenty, 6, 1, step="linear", direction="reverse") == [2, 2, 1, 1, 0, 0]


def test_adaptive_follows_difficulty_not_position():
    # All difficulty growth sits in the last shift (w 4 → 5): the adaptive step waits for the
    # target to pass the midpoint of that jump, while the linear step moves one position per epoch.
    scores = [1] * 17 + [101, 200, 300]
    s = build_spectrum(list(range(20)), scores, 0.25, 0.1)  # n_early 5, n_excluded 2, M = 13
    assert s.window_difficulties().tolist() == [13, 13, 13, 13, 13, 113]
    # targets for epochs 3..6: 33, 53, 73, 93 → 13 (w=0, first of the plateau), 13, 113, 113
    assert window_starts(s, 7, 1) == [0, 0, 0, 0, 5, 5, 5]
    assert window_starts(s, 7, 1, step="linear") == [0, 0, 1, 2, 3, 4, 5]
    # On a plateau of equal td the smallest start is taken.
    flat = build_spectrum(list(range(10)), [1] * 10, 0.3, 0.0)
    assert window_starts(flat, 5, 0) == [0, 0, 0, 0, 3]


def test_paper_default_25_epochs_5_warmup():
    s = build_spectrum(list(range(100)), [i ** 1.5 for i in range(1, 101)], 0.1, 0.1)
    w = window_starts(s, 25, 5)
    assert w[:6] == [0] * 6 and w[-1] == 10
    assert all(a <= b for a, b in zip(w, w[1:]))
    assert len(linear_temperatures(25)) == 25


def test_no_warmup_uses_first_and_last():
    s = build_spectrum(list(range(20)), list(range(1, 21)), 0.1, 0.1)
    assert window_starts(s, 2, 0) == [0, 2]


@pytest.mark.parametrize(
    "kwargs, msg",
    [(dict(epochs=3, warmup=2), "epochs ≥ warm-up \\+ 2"),
     (dict(epochs=6, warmup=1, step="cubic"), "unknown step 'cubic'"),
     (dict(epochs=6, warmup=1, direction="sideways"), "unknown direction 'sideways'"),
     (dict(epochs=6, warmup=-1), "warm-up")],
)
def test_bad_schedule(twenty, kwargs, msg):
    with pytest.raises(SpectrumKDError, match=msg):
        window_starts(twenty, **kwargs)


def test_plan_total_difficulty_matches_window_sums(twenty):
    plan = make_plan("spectrumkd", list(range(20)), list(range(1, 21)), epochs=6, warmup=1)
    assert [e.total_difficulty for e in plan.epochs] == [136, 136, 136, 152, 152, 168]
    assert plan.epochs[-1].ids == list(range(2, 18))
