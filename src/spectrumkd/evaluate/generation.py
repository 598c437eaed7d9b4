"""Batched text generation with a Hugging Face causal LM, and the paper's decoding protocols.

``generate(model, tokenizer, prompts, ...)`` tokenizes the prompts (``add_special_tokens=False``
as MiniLLM's data scripts do), keeps at most ``max_prompt_length`` tokens of each (MiniLLM keeps
the *first* 256 tokens; the number cut is reported by :func:`encode_prompts`), left-pads a batch,
and runs ``model.generate`` with the KV cache. Each row stops at its EOS (the tokenizer's and the
model generation config's EOS ids), or after ``max_new_tokens``, or when the whole sequence reaches
``max_length`` (MiniLLM's 512: a row gets ``max_length - len(its prompt)`` new tokens, independent
of the other rows in its batch), or at a stop string. Outputs are decoded with special tokens
skipped, cut at the first stop string, and stripped.

Protocols: :data:`INSTRUCT` is MiniLLM's (sampling at T = 1.0, top-k 0, top-p 1.0,
no_repeat_ngram_size 6, max length 512 with prompts up to 256 tokens, seeds {10, 20, 30, 40, 50});
:data:`GREEDY` is the math/code one (greedy, 1024 new tokens).

Randomness: each batch is sampled under ``torch.random.fork_rng`` seeded from
``(seed, index of the batch's first prompt)``, so the caller's global RNG is untouched, a run is
reproducible, and a resumed run regenerates the same batches (with the same ``batch_size``).
Sampled texts still depend on ``batch_size`` (rows of one batch share one RNG stream).

Not here: chat templates (pass rendered prompts), beam search, speculative decoding. The vLLM
backend (:func:`generate_vllm`) is optional, needs a GPU and ``vllm``, and is not exercised here.

References: Gu et al. 2023 (MiniLLM) ``evaluate_main.py``; the paper §C.4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from spectrumkd import SpectrumKDError

INSTRUCT_SEEDS = (10, 20, 30, 40, 50)


@dataclass(frozen=True)
class DecodingSettings:
    """Decoding parameters; ``max_new_tokens``/``max_length``/``max_prompt_length`` None = no cap."""

    do_sample: bool
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens is None and self.max_length is None:
            raise SpectrumKDError("set max_new_tokens or max_length, or generation never ends")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise SpectrumKDError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise SpectrumKDError(f"sampling needs temperature > 0, got {self.temperature}")
        if (
            self.max_length is not None
            and self.max_prompt_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            raise SpectrumKDError("max_prompt_length must be below max_length")

    def to_dict(self) -> dict:
        """Plain dict for results.json."""
        out = asdict(self)
        out["stop_strings"] = list(self.stop_strings)
        return out

    def with_(self, **changes) -> DecodingSettings:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


INSTRUCT = DecodingSettings(
    do_sample=True,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    no_repeat_ngram_size=6,
    max_length=512,
    max_prompt_length=256,
)
GREEDY = DecodingSettings(do_sample=False, max_new_tokens=1024)


def batch_seed(seed: int, start: int) -> int:
    """The torch seed of the batch whose first prompt has index ``start``.

    >>> batch_seed(10, 0) == batch_seed(10, 0) != batch_seed(20, 0)
    True
    """
    return int(np.random.SeedSequence([int(seed), int(start)]).generate_state(1)[0])


def encode_prompts(
    tokenizer, prompts: Sequence[str], *, max_prompt_length: int | None
) -> tuple[list[list[int]], int]:
    """Token ids of each prompt (no special tokens added), cut to ``max_prompt_length``.

    Returns ``(ids, n_cut)``: MiniLLM keeps the first ``max_prompt_length`` tokens of a long
    prompt; ``n_cut`` counts how many prompts were cut so callers can report it.
    """
    ids, n_cut = [], 0
    for prompt in prompts:
        tokens = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if not tokens:
            raise SpectrumKDError(f"prompt {prompt!r} encodes to no tokens")
        if max_prompt_length is not None and len(tokens) > max_prompt_length:
            tokens, n_cut = tokens[:max_prompt_length], n_cut + 1
        ids.append(tokens)
    return ids, n_cut


def eos_ids(model, tokenizer) -> list[int]:
    """Every EOS id of the tokenizer and the model's generation config, deduplicated."""
    found: list[int] = []
    candidates = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    if config is not None:
        candidates.append(config.eos_token_id)
    for value in candidates:
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and int(token) not in found:
                found.append(int(token))
    if not found:
        raise SpectrumKDError("the tokenizer has no EOS token; generation could not stop")
    return found


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string, stripped.

    >>> cut_at_stop(" 42\\n\\n### Problem: next", ["### Problem"])
    '42'
    """
    end = len(text)
    for stop in stop_strings:
        at = text.find(stop)
        if at != -1:
            end = min(end, at)
    return text[:end].strip()


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@dataclass(frozen=True)
class Sample:
    """One generated answer: its ``text`` (as :func:`generate` returns it) and the new ``tokens``
    the model produced, its EOS included when the answer ended with one (not cut at stop strings).
    The metric panel scores ``tokens`` under the teacher (:mod:`spectrumkd.evaluate.panel`)."""

    text: str
    tokens: tuple[int, ...]


def _generate_batch(
    model, tokenizer, batch_ids: list[list[int]], settings: DecodingSettings, seed: int,
    pad_id: int, stop_ids: list[int],
) -> list[Sample]:
    device = _device(model)
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):  # left padding: the last prompt token is aligned
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    budgets = []  # new tokens each row may keep
    for ids in batch_ids:
        caps = [c for c in (settings.max_new_tokens,) if c is not None]
        if settings.max_length is not None:
            caps.append(settings.max_length - len(ids))
        budgets.append(max(0, min(caps)))
    steps = max(budgets)
    if steps == 0:
        return [Sample("", ()) for _ in batch_ids]
    kwargs = dict(
        do_sample=settings.do_sample,
        max_new_tokens=steps,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
        use_cache=True,
        num_beams=1,
    )
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    else:  # silence the model's own sampling defaults
        kwargs.update(temperature=None, top_k=None, top_p=None)
    if settings.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
    if settings.stop_strings:
        kwargs.update(stop_strings=list(settings.stop_strings), tokenizer=tokenizer)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
        )
    new = out[:, width:].tolist()  # [batch, <= steps]
    samples = []
    for row, tokens in enumerate(new):
        tokens = tokens[: budgets[row]]
        for pos, token in enumerate(tokens):  # cut after the first EOS of this row
            if token in stop_ids:
                tokens = tokens[: pos + 1]
                break
        text = tokenizer.decode([t for t in tokens if t not in stop_ids], skip_special_tokens=True)
        samples.append(Sample(cut_at_stop(text, settings.stop_strings), tuple(tokens)))
    return samples


def iter_samples(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    settings: DecodingSettings,
    seed: int,
    batch_size: int = 8,
    start: int = 0,
) -> Iterator[tuple[int, list[Sample]]]:
    """Yield ``(index of the batch's first prompt, samples)`` batch by batch from ``start`` on.

    :func:`iter_generate` gives the texts alone; :func:`generate` collects them.
    """
    if batch_size < 1:
        raise SpectrumKDError(f"batch_size must be >= 1, got {batch_size}")
    stop_ids = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    ids, _ = encode_prompts(tokenizer, prompts, max_prompt_length=settings.max_prompt_length)
    was_training = model.training
    model.eval()
    try:
        for first in range(start, len(ids), batch_size):
            batch = ids[first: first + batch_size]
            yield first, _generate_batch(
                model, tokenizer, batch, settings, batch_seed(seed, first), pad_id, stop_ids
            )
    finally:
        model.train(was_training)


def iter_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    settings: DecodingSettings,
    seed: int,
    batch_size: int = 8,
    start: int = 0,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(index of the batch's first prompt, texts)`` batch by batch from ``start`` on.

    Use it to write results as they come (resumable evaluation); :func:`generate` collects.
    """
    for first, samples in iter_samples(model, tokenizer, prompts, settings=settings, seed=seed,
                                       batch_size=batch_size, start=start):
        yield first, [s.text for s in samples]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    do_sample: bool = True,
    max_new_tokens: int | None = None,
    seed: int = 10,
    batch_size: int = 8,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int = 6,
    max_length: int | None = 512,
    max_prompt_length: int | None = 256,
    stop_strings: Sequence[str] = (),
    on_batch: Callable[[int, list[str]], None] | None = None,
) -> list[str]:
    """Generate one completion per prompt; defaults are MiniLLM's instruct protocol.

    For greedy math/code decoding pass ``do_sample=False, max_new_tokens=1024, max_length=None,
    max_prompt_length=None, no_repeat_ngram_size=0`` (or use :data:`GREEDY` with
    :func:`iter_generate`). ``on_batch(first_index, texts)`` is called after each batch.
    Returns the decoded completions (prompt removed, special tokens skipped, stripped).
    """
    settings = DecodingSettings(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        no_repeat_ngram_size=no_repeat_ngram_size,
        max_new_tokens=max_new_tokens,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        stop_strings=tuple(stop_strings),
    )
    texts: list[str] = []
    for first, batch in iter_generate(
        model, tokenizer, prompts, settings=settings, seed=seed, batch_size=batch_size
    ):
        texts.extend(batch)
        if on_batch is not None:
            on_batch(first, batch)
    return texts


def vllm_available() -> bool:
    """Whether the optional vLLM backend can be imported."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def generate_vllm(
    model_path: str, prompts: Sequence[str], *, settings: DecodingSettings, seed: int
) -> list[str]:  # pragma: no cover - needs vLLM and a GPU
    """The same protocol on vLLM (GPU only); raises when vLLM is not installed.

    vLLM samples with its own RNG, so texts differ from the Hugging Face backend's at the same
    seed; prompts are not cut to ``max_prompt_length`` here beyond vLLM's own limits.
    """
    if not vllm_available():
        raise SpectrumKDError("the vLLM backend needs `pip install vllm` (and a GPU)")
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=seed)
    params = SamplingParams(
        temperature=settings.temperature if settings.do_sample else 0.0,
        top_k=settings.top_k if settings.top_k > 0 else -1,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens or settings.max_length,
        stop=list(settings.stop_strings) or None,
        seed=seed,
    )
    outputs = llm.generate(list(prompts), params)
    return [cut_at_stop(o.outputs[0].text, settings.stop_strings) for o in outputs]
