"""Which decoder layers to drop: block importance measured on calibration text.

- ``angular``: Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"
  (arXiv:2403.17887, eq. 7): for a block of ``n`` consecutive layers starting at ``l``, the angular
  distance ``arccos(cos(x_l, x_{l+n})) / π`` between the residual stream entering layer ``l`` and
  the one leaving layer ``l+n-1``, averaged over tokens. The block with the smallest distance
  changes the representation least and is removed. (The paper averages over the last token of
  each sequence; we average over every non-padding token, which is less noisy on a small set.)
  On SmolLM2-135M the distances of blocks starting at layers 2..7 lie within 5% of each other
  (0.228–0.239 for 15 of 30 layers on the S-NI calibration rows) while the pruned CE differs by
  2 nats/token (12.4 at layer 2, 10.3 at layer 4), so ``refine`` candidates with the smallest
  distance are scored by a ``judge`` (the student builder passes the pruned model's calibration
  CE) and the lowest wins (``refine=1`` is Gromov's rule as published).
- ``bi``: ShortGPT's Block Influence (Men et al. 2024, arXiv:2403.03853, eq. 2), per layer
  ``1 − cos(x_i, x_{i+1})`` averaged over tokens; the ``n`` layers with the smallest BI are
  removed (not necessarily contiguous).
- ``every``: keep layers ``0, k, 2k, ...`` (no measurement; kept for comparison, a poor choice:
  docs/design.md §11 measures 15.9 nats/token for every third layer of SmolLM2).

The residual stream is read with forward hooks on the decoder layers (the input of layer 0 and the
output of every layer), not from ``output_hidden_states``, whose last entry has the final norm
applied in llama-style models. Not here: the pruning itself (:mod:`spectrumkd.models.prune`) or
healing (:mod:`spectrumkd.train.student`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models.prune import decoder_layers

METHODS = ("angular", "bi", "every")


@dataclass(frozen=True)
class LayerChoice:
    """The layers kept, the layers removed, and the measured importance behind the choice."""

    method: str
    kept: list[int]
    removed: list[int]
    scores: list[float]
    """angular: distance of the block starting at each layer; bi: BI of each layer; every: []."""


@torch.no_grad()
def _cosines(model, batches: Iterable[dict]) -> tuple[torch.Tensor, int]:
    """``cos[a, b]`` summed over tokens for all stream pairs a < b (``[L+1, L+1]``), and the count."""
    _, _, layers = decoder_layers(model)
    n = len(layers)
    states: list[torch.Tensor | None] = [None] * (n + 1)

    def grab(i):
        def hook(module, args, kwargs, output):
            if i == 0:
                states[0] = (args[0] if args else kwargs["hidden_states"]).detach()
            states[i + 1] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    handles = [layer.register_forward_hook(grab(i), with_kwargs=True) for i, layer in enumerate(layers)]
    total = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    count = 0
    try:
        for batch in batches:
            mask = batch["attention_mask"].bool()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            flat = [s[mask].double() for s in states]  # each [tokens, hidden]
            unit = torch.stack([f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12) for f in flat])
            total += torch.einsum("ath,bth->ab", unit, unit)  # [L+1, L+1] summed cosines
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise SpectrumKDError("layer importance: the calibration batches hold no tokens")
    return total, count


def angular_distances(model, batches: Iterable[dict], n: int) -> list[float]:
    """Mean angular distance (in [0, 1]) of every block of ``n`` layers, indexed by its start."""
    total, count = _cosines(model, batches)
    layers = total.shape[0] - 1
    if not 1 <= n < layers:
        raise SpectrumKDError(f"a block of {n} layers must leave at least one of {layers}")
    cos = (total / count).clamp(-1.0, 1.0)
    return [math.acos(float(cos[s, s + n])) / math.pi for s in range(layers - n + 1)]


def block_influence(model, batches: Iterable[dict]) -> list[float]:
    """ShortGPT's Block Influence of every layer: ``1 − mean cos(input, output)``."""
    total, count = _cosines(model, batches)
    cos = total / count
    return [1.0 - float(cos[i, i + 1]) for i in range(total.shape[0] - 1)]


def choose_layers(model, batches: Iterable[dict] | None, *, keep: int, method: str = "angular",
                  every: int | None = None, refine: int = 1,
                  judge: Callable[[list[int]], float] | None = None) -> LayerChoice:
    """Choose the ``keep`` decoder layers of ``model`` to keep (``method`` in :data:`METHODS`).

    ``batches`` are tokenized calibration batches (``input_ids``, ``attention_mask``); ``every``
    needs none and ignores ``keep`` when ``every`` (the stride) is given. With ``refine > 1``
    (angular only), ``judge(kept_layers)`` scores that many closest blocks (lower is better, e.g.
    the pruned model's calibration CE) and the best one is removed.

    >>> from spectrumkd.models import tiny_random_model
    >>> choose_layers(tiny_random_model(layers=6), None, keep=3, method="every").kept
    [0, 2, 4]
    """
    _, _, layers = decoder_layers(model)
    total = len(layers)
    if method not in METHODS:
        raise SpectrumKDError(f"unknown pruning method {method!r}; use one of {METHODS}")
    if method == "every":
        stride = every if every is not None else math.ceil(total / keep)
        if stride < 2:
            raise SpectrumKDError(f"every={stride} must be >= 2 (1 keeps every layer)")
        kept = list(range(0, total, stride))
        if every is not None and len(kept) != keep:
            raise SpectrumKDError(f"every={every} keeps {len(kept)} of the {total} layers, not "
                                  f"keep={keep}; give the stride or the number to keep")
        return LayerChoice(method, kept, sorted(set(range(total)) - set(kept)), [])
    if not 1 <= keep < total:
        raise SpectrumKDError(f"keep={keep} must be in [1, {total}) for a {total}-layer model")
    if batches is None:
        raise SpectrumKDError(f"pruning method {method!r} needs calibration batches")
    drop = total - keep
    batches = list(batches)
    if method == "angular":
        scores = angular_distances(model, batches, drop)
        ranked = sorted(range(len(scores)), key=lambda i: (scores[i], i))[: max(1, refine)]
        if len(ranked) > 1:  # the judge (calibration CE) decides among the closest (docstring)
            if judge is None:
                raise SpectrumKDError("refine > 1 needs a judge of the candidate layer sets")
            marks = {i: judge([j for j in range(total) if not i <= j < i + drop]) for i in ranked}
            ranked = sorted(ranked, key=lambda i: (marks[i], i))
        start = ranked[0]
        removed = list(range(start, start + drop))
    else:
        scores = block_influence(model, batches)
        removed = sorted(sorted(range(total), key=lambda i: (scores[i], i))[:drop])
    kept = [i for i in range(total) if i not in removed]
    return LayerChoice(method, kept, removed, scores)
