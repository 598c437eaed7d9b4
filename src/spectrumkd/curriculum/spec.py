"""``PlanSpec``: every parameter of a plan, its default and its meaning, written once.

The fields are what :func:`spectrumkd.curriculum.make_plan_from_spec` reads. The same dataclass
is the plan part of the run config (``CurriculumConfig`` in :mod:`spectrumkd.train.config`
inherits it and adds how the examples are scored), and ``spectrumkd plan`` builds its options and
their ``--help`` from these fields and their docstrings. A field's ``metadata["choices"]`` is the
tuple its value must come from, imported from the module that owns the names;
``metadata["positive"]`` marks an integer that must be at least 1.

The defaults are the paper's (25 epochs, 5 warm-up, λa = λb = 0.1, τ 1 → 2, adaptive step).
The run config keeps a short 5/1 run as its own default for epochs and warm-up (see there).

Two spellings older than this class stay accepted by :func:`make_plan` and recorded in plan files
(``params``): ``warmup`` for ``warmup_epochs`` and ``static_low``/``static_high`` for
``static_range``; :data:`KEYWORD_NAMES` and :func:`plan_keywords` hold that mapping.

Nothing here checks values: the builders do, with messages that name the parameter (and the run
config checks its section when it loads). Pure Python; no numpy needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.schedule import DIRECTIONS, STEPS
from spectrumkd.curriculum.temperature import SCHEDULES

__all__ = ["KEYWORD_NAMES", "KINDS", "KIND_ALIASES", "MAX_EPOCHS", "MAX_SEED", "SHUFFLED_KINDS",
           "PlanSpec", "plan_keywords", "spec_from_keywords"]

MAX_EPOCHS = 10_000
"""The most epochs a plan may have (the paper trains 25; a plan lists every epoch)."""
MAX_SEED = 2**63 - 1
"""Seeds (training, shuffles, tiny models) are in ``[0, MAX_SEED]``: what ``torch.manual_seed``
and numpy take without wrapping."""

KINDS = ("spectrumkd", "full", "static", "babystep", "onepass", "random-window", "curated-shuffle")
SHUFFLED_KINDS = ("random-window", "curated-shuffle")
"""The kinds whose plan depends on :attr:`PlanSpec.shuffle_seed` (the control arms of issue 18)."""
KIND_ALIASES = {"none": "full"}
"""Other names of a kind: ``none`` (no curriculum) is the ``full`` plan."""


@dataclass
class PlanSpec:
    """What :func:`~spectrumkd.curriculum.make_plan_from_spec` builds (docs/design.md §5)."""

    kind: str = field(default="spectrumkd", metadata={"choices": (*KINDS, *KIND_ALIASES)})
    """The plan: spectrumkd (the paper's sliding window) or a baseline: full (every example every
    epoch; none is the same), static (one band of the spectrum), babystep / onepass (TCL); or a
    control arm: random-window (SpectrumKD's windows and τ over a seeded random order) or
    curated-shuffle (each epoch a seeded draw of the window size from the spectrum without its
    Excluded zone)."""
    lambda_a: float | str = 0.1
    """λa, the share of the sorted examples in each of the Early and Late zones
    (2·λa + λb <= 1); auto: from a log-normal fit of the scores."""
    lambda_b: float | str = 0.1
    """λb, the share of the hardest examples that is never trained on; auto: from the fit."""
    auto_lambda: bool = False
    """Choose λa and λb from a log-normal fit of the scores (curriculum/analyzer.py); overrides lambda_a and
    lambda_b. A poor fit is reported."""
    epochs: int = 25
    """Number of epochs n (the paper trains 25)."""
    warmup_epochs: int = 5
    """Warm-up epochs k: epochs 1..k+1 train on the easiest window; the window then slides so that
    epoch n trains on the hardest. Needs epochs >= k + 2 (paper: 5)."""
    step: str = field(default="adaptive", metadata={"choices": STEPS})
    """How the window slides: adaptive (each epoch adds about the same total difficulty) or
    linear (the same number of positions each epoch)."""
    direction: str = field(default="forward", metadata={"choices": DIRECTIONS})
    """forward (easy to hard, the paper) or reverse (hard to easy, an ablation)."""
    tau0: float = 1.0
    """Distillation temperature τ at epoch 1."""
    taun: float = 2.0
    """Distillation temperature τ at epoch n (linear schedule)."""
    static_range: list[float] = field(default_factory=lambda: [0.0, 0.8])
    """For static: the [low, high) fractions of the sorted spectrum kept every epoch."""
    temperature_schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    """linear (τ0 at epoch 1 to τn at epoch n, the paper) or constant (τ0 every epoch)."""
    buckets: int = field(default=3, metadata={"positive": True})
    """For babystep / onepass (TCL): the number of difficulty buckets."""
    epochs_per_stage: int | None = None
    """For babystep / onepass: epochs per bucket stage; unset: split the epochs evenly."""
    shuffle_seed: int | None = None
    """For random-window / curated-shuffle: the seed of the random order; unset: the run's seed
    (distill, experiment), 0 for a plan made on its own."""

    def resolved_kind(self) -> str:
        """``kind`` with aliases (``none``) resolved; an unknown kind is an error naming all."""
        kind = KIND_ALIASES.get(self.kind, self.kind)
        if kind not in KINDS:
            choices = ", ".join(KINDS)
            raise SpectrumKDError(f"unknown curriculum {self.kind!r}; choose one of {choices}")
        return kind

    def lambdas(self) -> tuple[float | str, float | str]:
        """``(λa, λb)``, each a number or ``"auto"`` (both ``"auto"`` with ``auto_lambda``)."""
        if self.auto_lambda:
            return "auto", "auto"
        return self.lambda_a, self.lambda_b


# make_plan's keyword (and the plan file's params key) where it differs from the field name.
KEYWORD_NAMES = {"warmup_epochs": "warmup"}
_PLAN_FIELDS = tuple(f.name for f in fields(PlanSpec))


def plan_keywords(spec: PlanSpec) -> dict[str, Any]:
    """The spec in :func:`make_plan`'s keywords (``kind`` resolved), the spelling plan files keep.

    >>> kw = plan_keywords(PlanSpec(warmup_epochs=2, auto_lambda=True))
    >>> kw["warmup"], kw["lambda_a"], kw["static_low"], kw["static_high"], "auto_lambda" in kw
    (2, 'auto', 0.0, 0.8, False)
    """
    out = {KEYWORD_NAMES.get(name, name): getattr(spec, name) for name in _PLAN_FIELDS}
    out["kind"] = spec.resolved_kind()
    out["lambda_a"], out["lambda_b"] = spec.lambdas()
    del out["auto_lambda"]
    out["static_low"], out["static_high"] = out.pop("static_range")
    return out


def spec_from_keywords(kind: str, **keywords: Any) -> PlanSpec:
    """The :class:`PlanSpec` of ``make_plan(kind, ids, scores, **keywords)``: field names, or the
    keyword spellings ``warmup`` and ``static_low``/``static_high``.

    >>> spec_from_keywords("static", warmup=1, static_high=0.9).static_range
    [0.0, 0.9]
    """
    renamed = {v: k for k, v in KEYWORD_NAMES.items()}
    values = {renamed.get(k, k): v for k, v in keywords.items()}
    if "static_low" in values or "static_high" in values:
        if "static_range" in values:
            raise TypeError("make_plan(): give static_range or static_low/static_high, not both")
        low, high = PlanSpec().static_range
        values["static_range"] = [values.pop("static_low", low), values.pop("static_high", high)]
    unknown = sorted(set(values) - set(_PLAN_FIELDS))
    if unknown:
        raise TypeError(f"make_plan() got unexpected keyword arguments {', '.join(unknown)}")
    return PlanSpec(kind=kind, **values)
