"""Depth pruning: a student made by keeping chosen decoder layers of a teacher (docs/design.md §11).

``prune_layers(model, keep)`` copies a model with only the ``keep`` decoder layers; which layers to
keep is chosen by :mod:`spectrumkd.models.importance`. Not here: healing (an ordinary distill run,
:mod:`spectrumkd.train.student`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from spectrumkd import SpectrumKDError


def decoder_layers(model) -> tuple[nn.Module, str, nn.ModuleList]:
    """The (parent, attribute, ModuleList) holding the decoder layers of common causal LMs."""
    base = getattr(model, model.base_model_prefix, model)
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, nn.ModuleList):
            return base, attr, layers
    raise SpectrumKDError(f"cannot find the decoder layers of {type(model).__name__}")


def prune_layers(model, keep: Iterable[int]):
    """A copy of ``model`` that keeps only the decoder layers ``keep`` (e.g. every third).

    Renumbers each kept layer's attention ``layer_idx`` (the KV-cache slot), slices
    ``config.layer_types`` where present and sets the layer count, so the result saves with
    :func:`save_model` as a normal Hugging Face folder. The pruned model is not expected to be good
    until trained (docs/design.md §11).

    >>> from spectrumkd.models import tiny_random_model
    >>> m = tiny_random_model(layers=3, hidden=32)
    >>> prune_layers(m, [0, 2]).config.num_hidden_layers
    2
    """
    keep = list(keep)
    n = model.config.num_hidden_layers
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
        raise SpectrumKDError(f"keep={keep} must be strictly increasing layer indices in [0, {n})")
    student = copy.deepcopy(model)
    parent, attr, layers = decoder_layers(student)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(parent, attr, kept)
    config = student.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    if getattr(config, "n_layer", None) is not None and config.model_type == "gpt2":
        config.n_layer = len(keep)
    return student


