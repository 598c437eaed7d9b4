"""The KD objective as one value: :class:`KDObjective`, its one argument check, and the presets.

``KDObjective(divergence, temperature, ce_weight, skew, teacher_weight)`` names the objective
``ce_weight·CE + (1−ce_weight)·τ²·D`` (docs/design.md §6; paper eq. 1/7). It is frozen and checks itself
when it is made, so every loss entry point (:func:`~spectrumkd.losses.kd_loss`,
:func:`~spectrumkd.losses.chunked_kd_loss`, :func:`~spectrumkd.losses.fused_kd_loss`,
:func:`~spectrumkd.losses.sparse_kd_loss`, the per-token divergences) and the run config
(``train.config.LossConfig``) share :func:`check_objective`, the only place where the ranges and
names are written. The loss functions take either ``objective=KDObjective(...)`` or its fields as
keywords; :func:`objective_from` turns the keyword form into the object, reading the field list from
the dataclass itself, so the list of loss parameters is written once (here).

Also here: the anchor presets (:func:`preset`), which are :class:`KDObjective` values.

Not here: any tensor math (torch-free on purpose; :mod:`.divergences` has the formulas and
:mod:`.reduction` the token reduction).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any

from spectrumkd import SpectrumKDError

# The per-token divergences (docs/design.md §6). ``divergences._FORMULAS`` has one entry per name, in
# this order (a test checks); "none" is also accepted by an objective and means plain SFT.
DIVERGENCES: tuple[str, ...] = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl")


def _number(where: str, name: str, value: Any) -> float:
    """``float(value)`` for a finite real number (not a bool); else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpectrumKDError(f"{where}{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SpectrumKDError(f"{where}{name} must be a finite number, got {value!r}")
    return float(value)


def _unit(where: str, name: str, value: Any) -> float:
    out = _number(where, name, value)
    if not 0.0 <= out <= 1.0:
        raise SpectrumKDError(f"{where}{name} must be in [0, 1], got {value!r}")
    return out


def check_objective(
    divergence: str,
    temperature: float,
    ce_weight: float,
    skew: float,
    teacher_weight: float,
    *,
    where: str = "",
) -> tuple[str, float, float, float, float]:
    """The one check of the KD parameters; returns them with the numbers as ``float``.

    ``divergence`` ∈ ``none`` + :data:`DIVERGENCES`; ``temperature`` finite and > 0; ``ce_weight``,
    ``skew`` and ``teacher_weight`` (β) in [0, 1]. NaN, ±inf, bools and non-numbers are refused.
    ``where`` prefixes the field name in the message (``"loss."`` for the run config). Raises a
    one-line :class:`~spectrumkd.SpectrumKDError` naming the field and the value.

    >>> check_objective("jsd", 2, 0.3, 0.1, 1)
    ('jsd', 2.0, 0.3, 0.1, 1.0)
    >>> check_objective("jsd", 1.0, float("nan"), 0.1, 0.5, where="loss.")
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: loss.ce_weight must be a finite number, got nan
    """
    if divergence != "none" and divergence not in DIVERGENCES:
        raise SpectrumKDError(
            f"unknown {where}divergence {divergence!r}: not one of none, {', '.join(DIVERGENCES)}"
        )
    tau = _number(where, "temperature", temperature)
    if not tau > 0:
        raise SpectrumKDError(f"{where}temperature must be > 0, got {temperature!r}")
    return (
        divergence,
        tau,
        _unit(where, "ce_weight", ce_weight),
        _unit(where, "skew", skew),
        _unit(where, "teacher_weight", teacher_weight),
    )


@dataclass(frozen=True)
class KDObjective:
    """``ce_weight·CE + (1−ce_weight)·τ²·D``: which D, at which τ, mixed how (docs/design.md §6).

    Checked when made (:func:`check_objective`); numbers are stored as ``float``. ``divergence="none"``
    or ``ce_weight=1`` is plain SFT (:attr:`kd_active` is False: no teacher needed). Change one field
    with :func:`dataclasses.replace`, e.g. the curriculum's τ of an epoch.

    >>> KDObjective("jsd", teacher_weight=0.9).weights()
    (0.3, 0.7)
    >>> KDObjective(temperature=0)
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: temperature must be > 0, got 0
    """

    divergence: str = "fkl"
    """fkl | rkl | jsd | tvd | skl | srkl (:mod:`.divergences`), or none (plain SFT)."""
    temperature: float = 1.0
    """τ > 0: both distributions are softmax(logits/τ); the KD term is scaled by τ²."""
    ce_weight: float = 0.3
    """α of the paper, in [0, 1]: the CE share (0.3 off-policy, 0 on-policy)."""
    skew: float = 0.1
    """s of skl/srkl (DistiLLM), in [0, 1]: 0 is the plain KL, 1 gives 0."""
    teacher_weight: float = 0.5
    """β of jsd (TRL's convention), in [0, 1]: 0 is exactly fkl, 1 exactly rkl."""

    def __post_init__(self) -> None:
        values = check_objective(
            self.divergence, self.temperature, self.ce_weight, self.skew, self.teacher_weight
        )
        for f, value in zip(dataclasses.fields(self), values):
            object.__setattr__(self, f.name, value)  # frozen: store the checked floats

    @property
    def kd_active(self) -> bool:
        """True when the KD term counts (a divergence is named and ``ce_weight < 1``)."""
        return self.divergence != "none" and self.ce_weight < 1.0

    def weights(self) -> tuple[float, float]:
        """``(ce coefficient, kd coefficient)`` of ``total = a·CE + b·D``: ``(α, (1−α)·τ²)``.

        Plain SFT (not :attr:`kd_active`) is ``(1, 0)``.
        """
        if not self.kd_active:
            return 1.0, 0.0
        return self.ce_weight, (1.0 - self.ce_weight) * self.temperature**2

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of the loss functions (``kd_loss(..., **o.kwargs())``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> KDObjective:
        """The objective from any object with attributes named like the fields (``RunConfig.loss``).

        Fields the object lacks keep their defaults (``LossConfig`` has no τ: the curriculum sets it
        per epoch, pass ``temperature=``); ``overrides`` win.

        >>> from types import SimpleNamespace
        >>> KDObjective.from_config(SimpleNamespace(divergence="rkl", ce_weight=0.0), temperature=2)
        KDObjective(divergence='rkl', temperature=2.0, ce_weight=0.0, skew=0.1, teacher_weight=0.5)
        """
        names = [f.name for f in dataclasses.fields(cls)]
        values = {n: getattr(config, n) for n in names if hasattr(config, n)}
        return cls(**(values | overrides))


def objective_from(objective: KDObjective | None, fields: dict[str, Any], caller: str) -> KDObjective:
    """The adapter behind every loss function's keyword form: ``objective`` or ``KDObjective(**fields)``.

    ``fields`` are the keyword arguments the caller did not name itself; an unknown one is a
    ``TypeError`` as Python would raise (with the closest field name), and giving both forms is a
    :class:`~spectrumkd.SpectrumKDError`.

    >>> objective_from(None, {"divergence": "tvd"}, "kd_loss").divergence
    'tvd'
    """
    names = [f.name for f in dataclasses.fields(KDObjective)]
    for key in fields:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the fields are {', '.join(names)}"
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")
    if objective is None:
        return KDObjective(**fields)
    if not isinstance(objective, KDObjective):
        raise SpectrumKDError(f"{caller}: objective must be a KDObjective, got {type(objective).__name__}")
    if fields:
        raise SpectrumKDError(
            f"{caller}: pass objective= or its fields ({', '.join(sorted(fields))}), not both"
        )
    return objective


def preset(name: str) -> KDObjective:
    """Settings named after the anchors, as a :class:`KDObjective` at τ = 1 (a fresh one each call).

    - ``kd``: fkl, ce_weight 0.3 — Hinton et al. 2015 with the paper's off-policy α = 0.3.
    - ``minillm``: rkl, ce_weight 0.3 — Gu et al. 2023, token-level reverse KL as in the paper's
      RKL baseline (MiniLLM's full method is a policy gradient, not reproduced here).
    - ``gkd``: jsd with β = 0.5, ce_weight 0 — Agarwal et al. 2024 (TRL ``GKDTrainer`` default β;
      on-policy, so the paper's α = 0).
    - ``distillm``: skl with skew 0.1, ce_weight 0.3 — Ko et al. 2024 (their α = 0.1).
    - ``distillm-srkl``: srkl with skew 0.1, ce_weight 0.3 — Ko et al. 2024.
    - ``distillm-jsd``: jsd as DistiLLM's ``finetune.py`` calls it, ``js_distance(...)`` with its
      default ``lam = 0.9``: mixture m = (1 − lam)·p + lam·q = 0.1·p + 0.9·q and value
      lam·KL(q‖m) + (1 − lam)·KL(p‖m), i.e. β = ``teacher_weight`` = 1 − lam = 0.1 in TRL's
      convention (jongwooko/distillm ``distillm/losses.py`` L32–52, ``finetune.py`` L184); tested
      against that formula in ``tests/losses/test_conventions.py``.
    - ``tvd``: tvd, ce_weight 0.3 — Wen et al. 2023.

    The conventions of each anchor (τ², CE form, β/λ/skew names, normalisation, CE mix) are
    tabulated in ``docs/losses.md``.

    Use it as ``kd_loss(..., objective=dataclasses.replace(preset("gkd"), temperature=τ))`` or
    ``kd_loss(..., **preset("gkd").kwargs())``.

    >>> preset("distillm-jsd").teacher_weight
    0.1
    """
    table = {  # name → (objective, anchor)
        "kd": (KDObjective("fkl", ce_weight=0.3), "Hinton et al. 2015"),
        "minillm": (KDObjective("rkl", ce_weight=0.3), "Gu et al. 2023 (MiniLLM)"),
        "gkd": (KDObjective("jsd", ce_weight=0.0, teacher_weight=0.5), "Agarwal et al. 2024 (GKD)"),
        "distillm": (KDObjective("skl", ce_weight=0.3, skew=0.1), "Ko et al. 2024 (DistiLLM)"),
        "distillm-srkl": (KDObjective("srkl", ce_weight=0.3, skew=0.1), "Ko et al. 2024 (DistiLLM)"),
        "distillm-jsd": (
            KDObjective("jsd", ce_weight=0.3, teacher_weight=0.1),
            "Ko et al. 2024 (DistiLLM js_distance, lam=0.9)",
        ),
        "tvd": (KDObjective("tvd", ce_weight=0.3), "Wen et al. 2023"),
    }
    if name not in table:
        raise SpectrumKDError(f"unknown KD preset {name!r}; expected one of {', '.join(table)}")
    return table[name][0]
