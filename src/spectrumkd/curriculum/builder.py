"""Build a plan from scores: the one entry point the CLI, the trainer and plug-in users call.

``make_plan_from_spec(spec, ids, scores)`` sorts the scores into a spectrum, chooses λ (given or
automatic), and returns a :class:`~spectrumkd.curriculum.plan.Plan` for the SpectrumKD sliding
window or one of the baselines; the parameters are a :class:`~spectrumkd.curriculum.spec.PlanSpec`.
``make_plan(kind, ids, scores, **options)`` is the keyword form of the same call. Nothing here
reads or writes files.
"""

from __future__ import annotations

import warnings

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.analyzer import PoorFitWarning, auto_lambdas
from spectrumkd.curriculum.baselines import (
    babystep_plan,
    curated_shuffle_plan,
    full_plan,
    onepass_plan,
    random_window_plan,
    static_plan,
)
from spectrumkd.curriculum.plan import EpochPlan, Plan
from spectrumkd.curriculum.schedule import window_starts
from spectrumkd.curriculum.spec import KINDS, MAX_EPOCHS, PlanSpec, spec_from_keywords
from spectrumkd.curriculum.spectrum import Spectrum, build_spectrum
from spectrumkd.curriculum.temperature import temperatures

__all__ = ["KINDS", "make_plan", "make_plan_from_spec", "spectrumkd_plan"]

_DEFAULT = PlanSpec()


def spectrumkd_plan(
    spectrum: Spectrum, epochs: int = _DEFAULT.epochs, warmup: int = _DEFAULT.warmup_epochs, *,
    step: str = _DEFAULT.step, direction: str = _DEFAULT.direction,
    temps: list[float] | None = None, params: dict | None = None,
) -> Plan:
    """The sliding-window plan: epoch ``j`` trains on sorted positions ``[w_j, w_j + M)``."""
    starts = window_starts(spectrum, epochs, warmup, step=step, direction=direction)
    temps = temps if temps is not None else temperatures(
        epochs, _DEFAULT.temperature_schedule, _DEFAULT.tau0, _DEFAULT.taun)
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


def make_plan(kind: str, ids: list, scores, **options) -> Plan:
    """Scores → spectrum → plan; ``options`` are :class:`PlanSpec` fields (defaults and meanings
    there) or the keyword spellings ``warmup`` (= ``warmup_epochs``) and ``static_low`` /
    ``static_high`` (= ``static_range``). ``lambda_a``/``lambda_b`` may be ``"auto"``.

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
    return make_plan_from_spec(spec_from_keywords(kind, **options), ids, scores)


def make_plan_from_spec(spec: PlanSpec, ids: list, scores) -> Plan:
    """The plan ``spec`` describes, for these ids and scores (the run config's curriculum section
    is a :class:`PlanSpec` too)."""
    kind = spec.resolved_kind()
    lambda_a, lambda_b = spec.lambdas()
    epochs, tau0, taun = spec.epochs, spec.tau0, spec.taun
    if not 1 <= epochs <= MAX_EPOCHS:
        raise SpectrumKDError(f"epochs must be in [1, {MAX_EPOCHS}], got {epochs}")
    params: dict = {"tau0": tau0, "taun": taun, "temperature_schedule": spec.temperature_schedule}
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
    temps = temperatures(epochs, spec.temperature_schedule, tau0, taun)
    seed = 0 if spec.shuffle_seed is None else spec.shuffle_seed
    if kind == "random-window":
        starts = window_starts(spectrum, epochs, spec.warmup_epochs, step=spec.step,
                               direction=spec.direction)
        params.update(warmup=spec.warmup_epochs, step=spec.step, direction=spec.direction,
                      epochs=epochs)
        return random_window_plan(spectrum, starts, temps, seed, params)
    if kind == "curated-shuffle":
        params["epochs"] = epochs
        return curated_shuffle_plan(spectrum, temps, seed, params)
    if kind == "spectrumkd":
        return spectrumkd_plan(spectrum, epochs, spec.warmup_epochs, step=spec.step,
                               direction=spec.direction, temps=temps, params=params)
    params["epochs"] = epochs
    if kind == "full":
        return full_plan(spectrum, temps, params)
    if kind == "static":
        low, high = spec.static_range
        return static_plan(spectrum, temps, low, high, params)
    if kind == "babystep":
        return babystep_plan(spectrum, temps, spec.buckets, spec.epochs_per_stage, params)
    return onepass_plan(spectrum, temps, spec.buckets, spec.epochs_per_stage, params)
