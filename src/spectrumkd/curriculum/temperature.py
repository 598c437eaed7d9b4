"""Distillation temperature per epoch (paper §3.3, "Adaptive Temperature Scheduling").

``τ_j = τ0 + (τn − τ0)·(j − 1)/(n − 1)`` for epochs ``j = 1..n`` (defaults 1 → 2), or a constant.
"""

from __future__ import annotations

import math

from spectrumkd import SpectrumKDError

__all__ = ["SCHEDULES", "linear_temperatures", "constant_temperatures", "temperatures"]

SCHEDULES = ("linear", "constant")


def _check_tau(name: str, tau: float) -> None:
    if not (math.isfinite(tau) and tau > 0):
        raise SpectrumKDError(f"{name} must be a positive number, got {tau!r}")


def linear_temperatures(epochs: int, tau0: float = 1.0, taun: float = 2.0) -> list[float]:
    """Linear schedule from ``tau0`` at epoch 1 to ``taun`` at epoch ``epochs``.

    >>> linear_temperatures(5, 1.0, 2.0)
    [1.0, 1.25, 1.5, 1.75, 2.0]
    >>> linear_temperatures(1, 1.0, 2.0)
    [1.0]
    """
    if epochs < 1:
        raise SpectrumKDError(f"epochs must be ≥ 1, got {epochs}")
    _check_tau("tau0", tau0)
    _check_tau("taun", taun)
    if epochs == 1:
        return [float(tau0)]
    return [tau0 + (taun - tau0) * (j - 1) / (epochs - 1) for j in range(1, epochs + 1)]


def constant_temperatures(epochs: int, tau: float = 1.0) -> list[float]:
    """``tau`` at every epoch.

    >>> constant_temperatures(3, 1.5)
    [1.5, 1.5, 1.5]
    """
    if epochs < 1:
        raise SpectrumKDError(f"epochs must be ≥ 1, got {epochs}")
    _check_tau("tau", tau)
    return [float(tau)] * epochs


def temperatures(epochs: int, schedule: str = "linear", tau0: float = 1.0, taun: float = 2.0):
    """Dispatch by name: ``linear`` (τ0 → τn) or ``constant`` (τ0 throughout)."""
    if schedule == "linear":
        return linear_temperatures(epochs, tau0, taun)
    if schedule == "constant":
        return constant_temperatures(epochs, tau0)
    raise SpectrumKDError(
        f"unknown temperature schedule {schedule!r}; use {' or '.join(SCHEDULES)}"
    )
