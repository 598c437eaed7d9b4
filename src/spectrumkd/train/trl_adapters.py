"""The plan's τ inside TRL's distillation losses (GKD trainer, ``DistillationTrainer``).

TRL's GKD trainer (``trl.experimental.gkd.GKDTrainer`` since TRL 1.x, ``trl.GKDTrainer`` before)
calls ``generalized_jsd_loss`` without a temperature, so its ``temperature`` only shapes on-policy
sampling; ``DistillationTrainer`` (``trl.DistillationTrainer``; ``trl.experimental.distillation``
is a deprecated alias) divides both logits by ``self.temperature``. Neither multiplies by τ².

The adapters here are mixins that :func:`spectrumkd.train.hf_callback.curriculum_trainer_class`
puts in front of those classes:

- GKD: ``generalized_jsd_loss`` gets ``temperature = τ`` of the current plan epoch, and the result
  is multiplied by τ² (``tau_squared=True``, the paper's objective; TRL's convention without it).
  Sampling keeps ``args.temperature``.
- Distillation: ``self.temperature = τ`` at every epoch start (it is read by the loss only; the
  generation config was fixed at construction from ``args.temperature``), and ``compute_loss`` is
  multiplied by τ².

Either way the τ that the loss used is reported to ``trainer.curriculum.history``. This module
imports TRL lazily; without TRL, :func:`adapter_for` returns None for every class.

Not here: the sampler and the epoch logic (:mod:`spectrumkd.train.hf_callback`).
"""

from __future__ import annotations

import importlib

__all__ = ["adapter_for", "distillation_trainer_class", "gkd_trainer_class"]


def _find(paths: tuple[tuple[str, str], ...]) -> type | None:
    for module, name in paths:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


def gkd_trainer_class() -> type | None:
    """TRL's GKD trainer class where this TRL has one (current path first), else None."""
    return _find((("trl.experimental.gkd", "GKDTrainer"), ("trl", "GKDTrainer")))


def distillation_trainer_class() -> type | None:
    """TRL's ``DistillationTrainer`` (stable path first), else None."""
    return _find((("trl", "DistillationTrainer"), ("trl.experimental.distillation", "DistillationTrainer")))


class GKDTemperature:
    """GKD: the plan's τ in ``generalized_jsd_loss``, times τ² unless ``tau_squared=False``."""

    def _curriculum_temperature_hook(self, user_hook):
        def hook(tau: float) -> None:
            self.temperature = tau  # TRL reads it for nothing but sampling config; kept in sync
            if user_hook is not None:
                user_hook(tau)

        return hook

    def generalized_jsd_loss(self, *args, **kwargs):
        tau = self.curriculum.temperature
        kwargs["temperature"] = tau
        loss = super().generalized_jsd_loss(*args, **kwargs)
        self.curriculum.note_loss_temperature(tau)
        return loss * tau**2 if self.curriculum_tau_squared else loss


class DistillationTemperature:
    """DistillationTrainer: ``self.temperature = τ`` each epoch, ``compute_loss`` times τ²."""

    _curriculum_generation_batches = True

    def _curriculum_temperature_hook(self, user_hook):
        def hook(tau: float) -> None:
            self.temperature = tau  # DistillationTrainer._compute_loss divides the logits by it
            if user_hook is not None:
                user_hook(tau)

        return hook

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        tau = self.curriculum.temperature
        self.temperature = tau  # _compute_loss divides the logits by it
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.curriculum.note_loss_temperature(tau)
        if not self.curriculum_tau_squared:
            return out
        if return_outputs:
            return out[0] * tau**2, out[1]
        return out * tau**2


def adapter_for(trainer_cls: type) -> type | None:
    """The τ adapter for a TRL KD trainer class (or subclass), None for any other trainer."""
    gkd = gkd_trainer_class()
    if gkd is not None and issubclass(trainer_cls, gkd):
        return GKDTemperature
    distillation = distillation_trainer_class()
    if distillation is not None and issubclass(trainer_cls, distillation):
        return DistillationTemperature
    return None
