"""Build a plan from scores: the one entry point the CLI, the trainer and plug-in users call.

``make_plan(kind, ids, scores, ...)`` sorts the scores into a spectrum, chooses λ (given or
automatic), and returns a :class:`~spectrumkd.curriculum.plan.Plan` for the SpectrumKD sliding
window or one of the baselines. Nothing here reads or writes files.
"""

from __future__ import annotations

import warnings

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.analyzer import PoorFitWarning, auto_lambdas
from spectrumkd.curriculum.baselines import babystep_plan, full_plan, onepass_plan, static_plan
from spectrumkd.curriculum.plan import EpochPlan, Plan
from spectrumkd.curriculum.schedule import window_starts
from spectrumkd.curriculum.spectrum import Spectrum, build_spectrum
from spectrumkd.curriculum.temperature import temperatures

__all__ = ["KINDS", "make_plan", "spectrumkd_plan"]

KINDS = ("spectrumkd", "full", "static", "babystep", "onepass")


def spectrumkd_plan(
    spectrum: Spectrum, epochs: int = 25, warmup: int = 5, *, step: str = "adaptive",
    direction: str = "forward", temps: list[float] | None = None, params: dict | None = None,
) -> Plan:
    """The sliding-window plan: epoch ``j`` trains on sorted positions ``[w_j, w_j + M)``."""
    starts = window_starts(spectrum, epochs, warmup, step=step, direction=direction)
    temps = temps if temps is not None else temperatures(epochs)
    m = spectrum.window_size
    # One list per distinct window, shared by the epochs that use it: 10^6 ids × 25 epochs would
    # otherwise copy 20M references. Treat EpochPlan.ids as read-only.
    windows = {w: spectrum.ids[w:w + m] for w in set(starts)}
    return Plan(
        n_total=spectrum.n_total,
        params={"curriculum": "spectrumkd", "epochs": epochs, "warmup": warmup, "step": step,
                "direction": direction, "window_size": m, **(params or {})},
        zones=spectrum.zones(),
        epochs=[
            EpochPlan(j, w, windows[w], float(t), spectrum.range_difficulty(w, w + m))
            for j, (w, t) in enumerate(zip(starts, temps), start=1)
        ],
    )


def make_plan(
    kind: str,
    ids: list,
    scores,
    *,
    epochs: int = 25,
    warmup: int = 5,
    lambda_a: float | str = 0.1,
    lambda_b: float | str = 0.1,
    step: str = "adaptive",
    direction: str = "forward",
    tau0: float = 1.0,
    taun: float = 2.0,
    temperature_schedule: str = "linear",
    static_low: float = 0.0,
    static_high: float = 0.8,
    buckets: int = 3,
    epochs_per_stage: int | None = None,
) -> Plan:
    """Scores → spectrum → plan. ``lambda_a``/``lambda_b`` may be ``"auto"`` (log-normal fit).

    The defaults are the paper's: 25 epochs, 5 warm-up, λa = λb = 0.1, τ 1 → 2, adaptive step.

    >>> ids = [f"ex{i}" for i in range(20)]
    >>> plan = make_plan("spectrumkd", ids, list(range(1, 21)), epochs=6, warmup=1)
    >>> [e.start for e in plan.epochs], plan.subset_sizes()[0]
    ([0, 0, 0, 1, 1, 2], 16)
    >>> [round(e.temperature, 2) for e in plan.epochs]
    [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    >>> plan.zones["excluded"]
    ['ex18', 'ex19']
    >>> make_plan("static", ids, list(range(20)), epochs=2).subset_sizes()
    [16, 16]
    """
    if kind not in KINDS:
        raise SpectrumKDError(f"unknown curriculum {kind!r}; choose one of {', '.join(KINDS)}")
    params: dict = {"tau0": tau0, "taun": taun, "temperature_schedule": temperature_schedule}
    if lambda_a == "auto" or lambda_b == "auto":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PoorFitWarning)
            auto = auto_lambdas(scores)
        for w in caught:  # re-issue so that callers see it with their own filters
            warnings.warn(w.message, w.category, stacklevel=2)
        lambda_a = auto.lambda_a if lambda_a == "auto" else lambda_a
        lambda_b = auto.lambda_b if lambda_b == "auto" else lambda_b
        params.update(lambda_auto=True, fit_mu=auto.fit.mu, fit_sigma=auto.fit.sigma,
                      fit_ks=auto.fit.ks_statistic, fit_poor=auto.poor_fit)
    if isinstance(lambda_a, str) or isinstance(lambda_b, str):
        raise SpectrumKDError(f"lambda must be a number or 'auto', got {lambda_a!r}/{lambda_b!r}")
    spectrum = build_spectrum(ids, scores, lambda_a, lambda_b)
    params.update(lambda_a=spectrum.lambda_a, lambda_b=spectrum.lambda_b)
    temps = temperatures(epochs, temperature_schedule, tau0, taun)
    if kind == "spectrumkd":
        return spectrumkd_plan(spectrum, epochs, warmup, step=step, direction=direction,
                               temps=temps, params=params)
    params["epochs"] = epochs
    if kind == "full":
        return full_plan(spectrum, temps, params)
    if kind == "static":
        return static_plan(spectrum, temps, static_low, static_high, params)
    if kind == "babystep":
        return babystep_plan(spectrum, temps, buckets, epochs_per_stage, params)
    return onepass_plan(spectrum, temps, buckets, epochs_per_stage, params)
