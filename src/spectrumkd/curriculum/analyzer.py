"""Fit a log-normal to the difficulty scores and choose λa/λb from it (Algorithm 1, line 3).

The paper observes that cross-entropy losses follow a log-normal law (Figure 3a) and leaves the
``analyzer`` of Algorithm 1 unspecified. docs/design.md §5 fixes it: fit a log-normal by maximum
likelihood (``μ`` = mean of ``log x``, ``σ`` = population standard deviation of ``log x``), then set
λa to the share of scores below the fitted 10% quantile and λb to the share above the fitted 90%
quantile. A perfectly log-normal spectrum gives the paper's 0.1/0.1; a heavier right tail excludes
more. The Kolmogorov–Smirnov statistic measures the fit, and a :class:`PoorFitWarning` is issued
when it exceeds ``ks_warn`` (the paper's stated limitation: the method assumes this shape).

This module does not decide what a good spectrum is for a given task; it only reports the fit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from spectrumkd import SpectrumKDError

__all__ = ["LogNormalFit", "AutoLambdas", "PoorFitWarning", "fit_lognormal", "auto_lambdas"]


class PoorFitWarning(UserWarning):
    """The scores are far from log-normal, so automatic λ may not mean what the paper intends."""


@dataclass(frozen=True)
class LogNormalFit:
    """A log-normal fitted by MLE: ``log x ~ Normal(mu, sigma)``."""

    mu: float
    sigma: float
    ks_statistic: float
    ks_pvalue: float
    n: int

    def quantile(self, q: float) -> float:
        """The fitted distribution's ``q`` quantile: ``exp(μ + σ·Φ⁻¹(q))``."""
        return float(math.exp(self.mu + self.sigma * stats.norm.ppf(q)))

    def pdf(self, x) -> np.ndarray:
        """Density of the fitted log-normal at ``x`` (for plots)."""
        return stats.lognorm.pdf(np.asarray(x, dtype=np.float64), s=self.sigma, scale=math.exp(self.mu))


@dataclass(frozen=True)
class AutoLambdas:
    lambda_a: float
    lambda_b: float
    fit: LogNormalFit
    poor_fit: bool


def fit_lognormal(scores) -> LogNormalFit:
    """Maximum-likelihood log-normal fit and its KS statistic against the data.

    >>> rng = np.random.default_rng(0)
    >>> fit = fit_lognormal(rng.lognormal(mean=0.5, sigma=0.3, size=20000))
    >>> round(fit.mu, 2), round(fit.sigma, 2), fit.ks_statistic < 0.02
    (0.5, 0.3, True)
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        raise SpectrumKDError("a log-normal fit needs at least 2 scores")
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise SpectrumKDError(
            "a log-normal fit needs finite, strictly positive scores "
            f"(min {np.nanmin(x):g}); use explicit --lambda-a/--lambda-b for this metric"
        )
    logs = np.log(x)
    mu, sigma = float(logs.mean()), float(logs.std())
    if sigma == 0.0:
        raise SpectrumKDError("all scores are equal: a log-normal fit is undefined")
    ks = stats.kstest(logs, "norm", args=(mu, sigma))
    return LogNormalFit(mu, sigma, float(ks.statistic), float(ks.pvalue), int(x.size))


def auto_lambdas(
    scores, *, low: float = 0.1, high: float = 0.9, ks_warn: float = 0.1
) -> AutoLambdas:
    """λa = share of scores below the fitted ``low`` quantile; λb = share above the ``high`` one.

    Warns with :class:`PoorFitWarning` when the KS statistic exceeds ``ks_warn``.

    >>> rng = np.random.default_rng(1)
    >>> a = auto_lambdas(rng.lognormal(size=100000))
    >>> round(a.lambda_a, 2), round(a.lambda_b, 2), a.poor_fit
    (0.1, 0.1, False)
    """
    x = np.asarray(scores, dtype=np.float64)
    fit = fit_lognormal(x)
    lambda_a = float(np.mean(x < fit.quantile(low)))
    lambda_b = float(np.mean(x > fit.quantile(high)))
    poor = fit.ks_statistic > ks_warn
    if poor:
        warnings.warn(
            f"scores are far from log-normal (KS statistic {fit.ks_statistic:.3f} > {ks_warn}); "
            f"automatic λa={lambda_a:.3f}, λb={lambda_b:.3f} may not match the paper's intent",
            PoorFitWarning,
            stacklevel=2,
        )
    if 2 * lambda_a + lambda_b > 1:
        raise SpectrumKDError(
            f"automatic λ gives 2·{lambda_a:.3f} + {lambda_b:.3f} > 1; set --lambda-a/--lambda-b"
        )
    return AutoLambdas(lambda_a, lambda_b, fit, poor)
