"""Hypothesis properties of the curriculum (STYLE.md: zones partition, constant window, ...)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spectrumkd.curriculum import Plan, build_spectrum, make_plan, window_starts

scores_st = st.lists(
    st.floats(min_value=0.01, max_value=50.0, allow_nan=False, allow_infinity=False),
    min_size=10, max_size=120,
)
lambdas_st = st.tuples(st.integers(0, 30), st.integers(0, 30)).filter(
    lambda t: 2 * t[0] + t[1] <= 90
).map(lambda t: (t[0] / 100, t[1] / 100))
schedule_st = st.tuples(st.integers(0, 6), st.integers(2, 12)).map(lambda t: (t[0] + t[1], t[0]))


@settings(max_examples=150, deadline=None)
@given(scores_st, lambdas_st, schedule_st, st.sampled_from(["adaptive", "linear"]))
def test_plan_properties(scores, lambdas, schedule, step):
    ids = [f"id{i}" for i in range(len(scores))]
    epochs, warmup = schedule
    plan = make_plan("spectrumkd", ids, scores, epochs=epochs, warmup=warmup,
                     lambda_a=lambdas[0], lambda_b=lambdas[1], step=step)
    spectrum = build_spectrum(ids, scores, *lambdas)
    # zones partition the ids
    zone_ids = [i for z in plan.zones.values() for i in z]
    assert sorted(zone_ids) == sorted(ids)
    # every epoch has exactly M ids, never an excluded one
    m = spectrum.window_size
    assert plan.subset_sizes() == [m] * epochs
    assert not plan.used_ids() & set(plan.zones["excluded"])
    # forward windows never get easier; warm-up at 0; the last epoch is the last window
    starts = [e.start for e in plan.epochs]
    assert all(a <= b for a, b in zip(starts, starts[1:]))
    diffs = [e.total_difficulty for e in plan.epochs]
    assert all(a <= b + 1e-9 * max(1.0, abs(b)) for a, b in zip(diffs, diffs[1:]))
    assert starts[: warmup + 1] == [0] * (warmup + 1)
    assert starts[-1] == spectrum.n_early
    assert plan.epochs[-1].ids == spectrum.ids[spectrum.n_early:spectrum.n_early + m]
    # the plan round-trips through JSON
    assert Plan.from_dict(plan.to_dict()) == plan
    # same input → same plan
    assert make_plan("spectrumkd", ids, scores, epochs=epochs, warmup=warmup,
                     lambda_a=lambdas[0], lambda_b=lambdas[1], step=step) == plan


@settings(max_examples=100, deadline=None)
@given(scores_st, lambdas_st, schedule_st)
def test_reverse_mirrors_forward_endpoints(scores, lambdas, schedule):
    epochs, warmup = schedule
    s = build_spectrum(list(range(len(scores))), scores, *lambdas)
    rev = window_starts(s, epochs, warmup, direction="reverse")
    assert rev[0] == s.n_early and rev[-1] == 0
    assert all(a >= b for a, b in zip(rev, rev[1:]))


@settings(max_examples=100, deadline=None)
@given(scores_st, schedule_st)
def test_adaptive_tracks_the_cumulative_target(scores, schedule):
    epochs, warmup = schedule
    s = build_spectrum(list(range(len(scores))), scores, 0.1, 0.1)
    td = s.window_difficulties()
    starts = window_starts(s, epochs, warmup)
    for j in range(warmup + 2, epochs):
        target = td[0] + (j - warmup - 1) * (td[-1] - td[0]) / (epochs - warmup - 1)
        chosen = abs(td[starts[j - 1]] - target)
        assert chosen <= np.min(np.abs(td - target)) + 1e-9
