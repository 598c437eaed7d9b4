"""Load causal LMs and tokenizers (hub id, local folder, GGUF file, tiny random); save; fingerprint.

- ``load_model(spec)`` / ``load_tokenizer(spec)`` where ``spec`` is a Hugging Face hub id, a local
  folder, a path to a ``.gguf`` file (or a folder plus ``gguf_file=``; transformers dequantises it to a
  normal float model), or ``"tiny-random:llama"`` / ``"tiny-random:gpt2"`` (optionally
  ``?layers=2&hidden=64&seed=0``; :mod:`spectrumkd.models.tiny`).
- ``save_model``: ``save_pretrained`` that also works for GGUF-loaded models (clears the quantizer).
- ``model_fingerprint``: a content hash of a model (caches and scores files are keyed by it).
- ``check_same_tokenizer``: teacher and student must share a vocabulary (docs/design.md §6); the one
  tokenizer check.
- ``describe``: a model's display name (spec, GGUF file, kept layers) for headers and logs.

Not here: downloads (transformers does them, for hub ids), quantisation, adapters, pruning
(:mod:`spectrumkd.models.prune`). ``trust_remote_code`` stays off unless the caller asks for it.
References: transformers' GGUF loading (``from_pretrained(..., gguf_file=...)``); docs/design.md §11.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models.tiny import TINY_PREFIX, _parse_tiny_spec, tiny_random_model, tiny_tokenizer


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """float32 by default (bf16 is 7–400× slower on CPU); ``"bf16"``/``"fp16"``/``"fp32"`` or a dtype.

    >>> resolve_dtype(None, "cpu"), resolve_dtype("bf16", "cuda")
    (torch.float32, torch.bfloat16)
    """
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in names:
        raise SpectrumKDError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → the first CUDA device if there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _split_gguf(spec: str, gguf_file: str | None) -> tuple[str, str | None]:
    """A direct ``.gguf`` path becomes (its folder, its file name)."""
    path = Path(spec)
    if gguf_file is None and spec.endswith(".gguf"):
        if not path.is_file():
            raise SpectrumKDError(f"GGUF file {spec} does not exist")
        return str(path.parent), path.name
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        raise SpectrumKDError(f"GGUF file {gguf_file} is not in {spec}")
    return spec, gguf_file


def _from_pretrained(auto_class, what: str, spec: str, gguf_file: str | None, **kwargs):
    """``(auto_class.from_pretrained(...), gguf_file)`` for a hub id, folder or GGUF spec; a
    missing or unreadable model is a one-line error naming ``spec``."""
    source, gguf_file = _split_gguf(spec, gguf_file)
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        return auto_class.from_pretrained(source, **kwargs), gguf_file
    except Exception as exc:
        if not _broken_model(exc):
            raise
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        if isinstance(exc, KeyError):
            first = f"a file is malformed (no key {first})"
        raise SpectrumKDError(f"cannot load {what} {spec!r}: {first}") from exc


def _broken_model(exc: Exception) -> bool:
    """Whether ``from_pretrained`` failed on a missing or broken model, not on a bug: unreadable
    files or a failed download (OSError), no ``config.json`` or a bad one (ValueError,
    huggingface_hub's config validation), weights cut short (SafetensorError), a corrupt
    ``tokenizer.json`` (ValueError, KeyError, or the plain ``Exception`` the tokenizers library
    raises), a file that is not GGUF (ValueError)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    known = (OSError, ValueError, KeyError, SafetensorError, StrictDataclassError)
    return isinstance(exc, known) or type(exc) is Exception


def load_model(
    spec: str,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM in eval mode from a hub id, folder, ``.gguf`` path or ``tiny-random:`` spec.

    GGUF files are dequantised by transformers to ``dtype`` (float32 by default) and the quantizer
    state is cleared, so the result saves with :func:`save_model` like any model.

    >>> load_model("tiny-random:llama?layers=1&hidden=32").config.num_hidden_layers
    1
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if spec.startswith(TINY_PREFIX):
        model = tiny_random_model(**_parse_tiny_spec(spec)).to(dtype=torch_dtype)
        return model.to(device)
    from transformers import AutoModelForCausalLM

    model, gguf_file = _from_pretrained(AutoModelForCausalLM, "model", spec, gguf_file,
                                        dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if gguf_file is not None:
        _clear_quantizer(model)
    return model.to(device).eval()


def load_tokenizer(
    spec: str,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
):
    """Load the tokenizer that goes with :func:`load_model`'s ``spec``; add a pad token if missing.

    A tokenizer without a pad token gets its EOS token as pad (padding positions are masked by the
    attention mask and ``labels = -100``, so the id never matters); without either it is an error.

    >>> load_tokenizer("tiny-random:gpt2").pad_token
    '<pad>'
    """
    if spec.startswith(TINY_PREFIX):
        _parse_tiny_spec(spec)  # validate the options
        tok = tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok, _ = _from_pretrained(AutoTokenizer, "tokenizer", spec, gguf_file,
                                  trust_remote_code=trust_remote_code)
    return ensure_pad_token(tok, name=spec)


def ensure_pad_token(tokenizer, *, name: str = "tokenizer"):
    """Give ``tokenizer`` a pad token (its EOS) when it has none; return it."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise SpectrumKDError(f"{name}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _clear_quantizer(model) -> None:
    """Drop transformers' GGUF quantizer state so ``save_pretrained`` works (docs/design.md §11)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions: nothing to clear
            pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


@contextmanager
def quiet_save_bars():
    """transformers' "Writing model shards" bar off while saving, as it was afterwards: a save
    takes a second and its bar would cut through the training bar."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def save_model(model, out_dir: str | Path, tokenizer=None) -> Path:
    """``save_pretrained`` (safetensors) that also works for GGUF-loaded models; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_quantizer(model)
    with quiet_save_bars():
        model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def model_fingerprint(model, *, sample: int = 4096) -> str:
    """A content hash of a model: architecture config plus a strided sample of every tensor.

    The same weights give the same fingerprint however they were loaded (GGUF or saved folder);
    a different model, dtype or pruning gives a different one. 16 hex digits.
    """
    h = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
    config.pop("transformers_version", None)
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    h.update(repr(sorted((k, repr(v)) for k, v in config.items())).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]



def check_same_tokenizer(tok_a, tok_b, *, names: tuple[str, str] = ("teacher", "student")) -> int:
    """Raise unless both tokenizers map the same strings to the same ids (docs/design.md §6); return
    the shared tokenizer length, the ``vocab_size`` for ``losses.shared_vocab_logits``.

    Compares ``get_vocab()`` (token → id, added tokens included; duck-typed). The embedding
    matrices may still be padded to different sizes: the losses slice logits to this length. The
    message names the first token (by id) that differs and what only one side has.

    >>> check_same_tokenizer(tiny_tokenizer(), tiny_tokenizer()) == len(tiny_tokenizer())
    True
    """
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return len(va)
    a, b = names
    first = min((t for t in set(va) | set(vb) if va.get(t) != vb.get(t)),
                key=lambda t: (min(va.get(t, 1 << 62), vb.get(t, 1 << 62)), t))
    only_a = sorted(set(va) - set(vb))[:5]
    only_b = sorted(set(vb) - set(va))[:5]
    moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])[:5]
    raise SpectrumKDError(
        f"the {a} and {b} tokenizers differ ({len(va)} vs {len(vb)} tokens): token {first!r} has "
        f"id {va.get(first)} in the {a} and {vb.get(first)} in the {b}; only in {a}: {only_a}; "
        f"only in {b}: {only_b}; different ids: {moved}; white-box KD needs one shared tokenizer"
    )


def describe(spec: str, *, gguf_file: str | None = None, prune_layers=None) -> str:
    """A model's display name in file headers and logs: ``spec``, ``/gguf_file`` when the GGUF
    file is named apart from its folder, ``?keep=0,2,...`` when only some layers are kept.

    Teacher caches are reused only when this name matches, so the spelling stays as written.

    >>> describe("models/q", gguf_file="q.gguf", prune_layers=[0, 3])
    'models/q/q.gguf?keep=0,3'
    """
    name = spec
    if gguf_file:
        name += f"/{gguf_file}"
    if prune_layers is not None:
        name += f"?keep={','.join(map(str, prune_layers))}"
    return name


