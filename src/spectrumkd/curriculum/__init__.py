"""The pure curriculum core (paper §3.2–3.3): scores → spectrum → zones → per-epoch plan.

numpy and scipy only; this package never imports torch or transformers, so it plugs into any
trainer. Typical use::

    from spectrumkd.curriculum import read_scores, make_plan
    s = read_scores("scores.jsonl")
    plan = make_plan("spectrumkd", s.ids, s.scores, epochs=25, warmup=5)
    for e in plan.epochs:          # train on e.ids at temperature e.temperature
        ...

>>> from spectrumkd.curriculum import make_plan
>>> plan = make_plan("spectrumkd", list("abcdefghij"), [3, 1, 2, 9, 4, 5, 6, 7, 8, 30],
...                  epochs=4, warmup=1)
>>> [e.ids[:2] for e in plan.epochs]
[['b', 'c'], ['b', 'c'], ['b', 'c'], ['c', 'a']]
"""

from spectrumkd.curriculum.analyzer import (
    AutoLambdas,
    LogNormalFit,
    PoorFitWarning,
    auto_lambdas,
    fit_lognormal,
)
from spectrumkd.curriculum.baselines import (
    babystep_plan,
    curated_shuffle_plan,
    full_plan,
    onepass_plan,
    random_window_plan,
    static_plan,
)
from spectrumkd.curriculum.builder import make_plan, make_plan_from_spec, spectrumkd_plan
from spectrumkd.curriculum.plan import EpochPlan, Plan
from spectrumkd.curriculum.schedule import DIRECTIONS, STEPS, window_starts
from spectrumkd.curriculum.scores import ScoresFile, read_scores, validate_scores
from spectrumkd.curriculum.spec import (
    KIND_ALIASES,
    KINDS,
    MAX_EPOCHS,
    MAX_SEED,
    SHUFFLED_KINDS,
    PlanSpec,
    plan_keywords,
)
from spectrumkd.curriculum.spectrum import ZONES, Spectrum, build_spectrum
from spectrumkd.curriculum.temperature import (
    SCHEDULES,
    constant_temperatures,
    linear_temperatures,
    temperatures,
)

__all__ = [
    "DIRECTIONS",
    "KINDS",
    "KIND_ALIASES",
    "MAX_EPOCHS",
    "MAX_SEED",
    "SCHEDULES",
    "SHUFFLED_KINDS",
    "STEPS",
    "ZONES",
    "AutoLambdas",
    "EpochPlan",
    "LogNormalFit",
    "Plan",
    "PlanSpec",
    "PoorFitWarning",
    "ScoresFile",
    "Spectrum",
    "auto_lambdas",
    "babystep_plan",
    "build_spectrum",
    "constant_temperatures",
    "curated_shuffle_plan",
    "fit_lognormal",
    "full_plan",
    "linear_temperatures",
    "make_plan",
    "make_plan_from_spec",
    "onepass_plan",
    "plan_keywords",
    "random_window_plan",
    "read_scores",
    "spectrumkd_plan",
    "static_plan",
    "temperatures",
    "validate_scores",
    "window_starts",
]
