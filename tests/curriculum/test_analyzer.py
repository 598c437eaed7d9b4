import math
import warnings

import numpy as np
import pytest
from scipy import stats

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import PoorFitWarning, auto_lambdas, fit_lognormal, make_plan


def test_mle_matches_scipy_lognorm_fit():
    x = np.random.default_rng(3).lognormal(1.2, 0.5, 5000)
    fit = fit_lognormal(x)
    s, loc, scale = stats.lognorm.fit(x, floc=0)
    assert fit.sigma == pytest.approx(s, rel=1e-6)
    assert fit.mu == pytest.approx(math.log(scale), rel=1e-6)
    assert fit.quantile(0.5) == pytest.approx(scale, rel=1e-6)


def test_lognormal_gives_paper_lambdas_and_heavier_tail_excludes_more():
    rng = np.random.default_rng(4)
    x = rng.lognormal(0.0, 0.5, 50000)
    a = auto_lambdas(x)
    assert a.lambda_a == pytest.approx(0.1, abs=0.01)
    assert a.lambda_b == pytest.approx(0.1, abs=0.01)
    # A cluster of hard examples (10% more, centred 2.4σ up in log space) thickens the right tail.
    heavy = np.concatenate([x, rng.lognormal(1.2, 0.3, 5000)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoorFitWarning)
        b = auto_lambdas(heavy)
    assert b.lambda_b > a.lambda_b + 0.01


def test_poor_fit_warns():
    x = np.concatenate([np.full(500, 1.0), np.full(500, 10.0)])  # two spikes: not log-normal
    with pytest.warns(PoorFitWarning, match="KS statistic"):
        a = auto_lambdas(x)
    assert a.poor_fit


def test_nonpositive_scores_are_an_error():
    with pytest.raises(SpectrumKDError, match="strictly positive"):
        fit_lognormal([0.0, 1.0, 2.0])


def test_make_plan_records_auto_lambda():
    x = np.random.default_rng(5).lognormal(0.0, 0.4, 1000)
    plan = make_plan("spectrumkd", list(range(1000)), x, epochs=5, warmup=1,
                     lambda_a="auto", lambda_b="auto")
    assert plan.params["lambda_auto"] is True
    assert 0.05 < plan.params["lambda_a"] < 0.15
    assert plan.params["fit_ks"] < 0.05
