"""One way to open a model: a spec (package name, hub id, folder, GGUF file) → a loaded model.

``open_model(spec)`` is what every command and pipeline calls (``score``, ``eval``, ``distill``,
``student``, ``experiment``), so a spec that works in one works in all:

- ``smollm2``, ``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``: the offline GGUF wheels
  (:mod:`spectrumkd.models.packages`), assembled and SHA-256-checked where split into parts;
- a ``.gguf`` file, or a folder with ``gguf_file=``: dequantised once into a normal folder under
  ``cache_dir()/models`` (``gguf_cache=False`` dequantises in memory on every load instead);
- a hub id, a ``save_pretrained`` folder or ``tiny-random:llama|gpt2[?...]``: loaded as they are.

:func:`resolve_model` does the first two steps and returns what :func:`~spectrumkd.models.load.
load_model` reads. Under several processes (``torchrun`` / ``accelerate launch``, an initialised
``torch.distributed`` group) the main process resolves first and the others wait for it, then
find the cached folder: one conversion, never a race on the cache. The seconds reported include
that first conversion (minutes for the Qwen parts), not only the load.

Not here: downloads (transformers does them for hub ids), pruning (:mod:`~spectrumkd.models.prune`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models.load import describe, load_model, load_tokenizer
from spectrumkd.models.packages import cached_gguf_folder, resolve_spec

__all__ = ["OpenedModel", "open_model", "resolve_model"]


def _is_gguf(spec: str, gguf_file: str | None) -> bool:
    return gguf_file is not None or spec.endswith(".gguf")


def _resolve_here(spec: str, gguf_file: str | None, gguf_cache: bool) -> tuple[str, str | None]:
    source, gguf = resolve_spec(spec, gguf_file)  # package names → their cached folders
    if gguf_cache and _is_gguf(source, gguf):
        path = Path(source) / gguf if gguf else Path(source)
        if not path.is_file():
            raise SpectrumKDError(f"GGUF file {path} does not exist")
        return str(cached_gguf_folder(path)), None
    return source, gguf


def resolve_model(spec: str, gguf_file: str | None = None, *,
                  gguf_cache: bool = True) -> tuple[str, str | None]:
    """``(source, gguf_file)`` for :func:`load_model`: package names and GGUF files become the
    cached dequantised folder (``gguf_file`` then ``None``); anything else is returned as it is.

    Under an initialised ``torch.distributed`` group the main process resolves first (it may
    convert); the others then resolve to the same folder without converting again.

    >>> resolve_model("tiny-random:llama")
    ('tiny-random:llama', None)
    """
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not dist:
        return _resolve_here(spec, gguf_file, gguf_cache)
    main = torch.distributed.get_rank() == 0
    failure: SpectrumKDError | None = None
    result = None
    if main:
        try:
            result = _resolve_here(spec, gguf_file, gguf_cache)
        except SpectrumKDError as exc:
            failure = exc
    box = [None if failure is None else str(failure)]
    torch.distributed.broadcast_object_list(box, src=0)  # also the barrier: main has finished
    if box[0] is not None:
        raise failure if failure is not None else SpectrumKDError(box[0])
    return result if main else _resolve_here(spec, gguf_file, gguf_cache)


@dataclass
class OpenedModel:
    """What :func:`open_model` returns: the model (eval mode) and its tokenizer (pad token set),
    the ``source`` they were loaded from (a cached folder for packages and GGUF files), the display
    ``name`` of file headers (:func:`~spectrumkd.models.load.describe` of the spec as given) and
    the ``seconds`` it took, any first-time conversion included."""

    model: torch.nn.Module | None
    tokenizer: object
    source: str
    gguf_file: str | None
    name: str
    seconds: float


def open_model(spec: str, *, gguf_file: str | None = None, dtype=None, device=None,
               trust_remote_code: bool = False, gguf_cache: bool = True,
               load_weights: bool = True) -> OpenedModel:
    """Resolve ``spec`` (:func:`resolve_model`) and load its tokenizer and model.

    ``load_weights=False`` loads the tokenizer only (``model`` is ``None``), e.g. to build
    examples before deciding whether the model is needed.

    >>> opened = open_model("tiny-random:llama?layers=1&hidden=32")
    >>> opened.model.config.num_hidden_layers, opened.name, opened.tokenizer.pad_token
    (1, 'tiny-random:llama?layers=1&hidden=32', '<pad>')
    """
    t0 = time.perf_counter()
    source, gguf = resolve_model(spec, gguf_file, gguf_cache=gguf_cache)
    tokenizer = load_tokenizer(source, gguf_file=gguf, trust_remote_code=trust_remote_code)
    model = None
    if load_weights:
        model = load_model(source, gguf_file=gguf, dtype=dtype, device=device,
                           trust_remote_code=trust_remote_code)
    return OpenedModel(model=model, tokenizer=tokenizer, source=source, gguf_file=gguf,
                       name=describe(spec, gguf_file=gguf_file), seconds=time.perf_counter() - t0)
