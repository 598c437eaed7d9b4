"""Tokenize rendered examples with prompt masks, and drop (never truncate) over-long ones.

The rule is MiniLLM's: ``prompt_ids = encode(prompt)``, ``full = encode(prompt + output) + [EOS]``
(no special tokens added by the tokenizer), ``labels = [-100] * len(prompt_ids) + full[len(prompt_ids):]``.
Appending the EOS id equals tokenizing the EOS text, which every tokenizer splits off as a special
token. Examples whose prompt has more than ``max_prompt_length`` tokens or whose total exceeds
``max_length`` are dropped and recorded with the reason (docs/design.md §3); an empty output is dropped
too ("empty_response"). Every example dropped is an error.

What it does not do: pad (see ``collate.py``) or shift labels (the loss caller shifts).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.data.formats import Record, record_from_row
from spectrumkd.data.templates import render_prompt

IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenized example: ``labels`` equal ``input_ids`` on the response and -100 on the prompt."""

    id: str | int
    prompt: str
    response: str | None
    references: list[str] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return sum(1 for label in self.labels if label == IGNORE_INDEX)

    @property
    def num_response_tokens(self) -> int:
        return len(self.labels) - self.num_prompt_tokens


def tokenize_example(tokenizer, prompt: str, output: str | None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` by MiniLLM's ``full[len(prompt_ids):]`` rule (EOS appended).

    With ``output=None`` (evaluation prompts) the ids are the prompt's and every label is -100.

    >>> from spectrumkd.models import tiny_tokenizer
    >>> tok = tiny_tokenizer()
    >>> ids, labels = tokenize_example(tok, "Q: 1+1?\\nA:", " 2")
    >>> ids[-1] == tok.eos_token_id, labels[0], labels[-1] == tok.eos_token_id
    (True, -100, True)
    """
    # verbose=False: rows over the length limits are dropped below, with the reason in
    # dropped.jsonl; the tokenizer's own length warning would only repeat that as noise.
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False, verbose=False)
    if output is None:
        return list(prompt_ids), [IGNORE_INDEX] * len(prompt_ids)
    if tokenizer.eos_token_id is None:
        raise SpectrumKDError("the tokenizer has no EOS token to end the response with")
    full = list(tokenizer.encode(prompt + output, add_special_tokens=False, verbose=False))
    full.append(tokenizer.eos_token_id)
    n = len(prompt_ids)
    return full, [IGNORE_INDEX] * n + full[n:]


def build_examples(
    records: Sequence[Record | Mapping],
    tokenizer,
    *,
    template: str = "dolly",
    max_prompt_length: int = 256,
    max_length: int = 512,
    few_shot: Sequence[Record] = (),
    require_response: bool = True,
) -> tuple[list[Example], list[dict]]:
    """Render, tokenize and filter ``records``; returns ``(examples, dropped)`` in input order.

    ``dropped`` holds one ``{"id", "reason", "prompt_tokens", "total_tokens", "limit"}`` per dropped
    example; reasons are ``empty_response``, ``prompt_too_long`` (> ``max_prompt_length``) and
    ``too_long`` (> ``max_length``). A record without an output is an error naming its file and
    line when ``require_response`` (training, scoring); raises when every example is dropped.

    >>> from spectrumkd.models import tiny_tokenizer
    >>> ex, dropped = build_examples([{"instruction": "Hi", "output": "Hello"}], tiny_tokenizer())
    >>> len(ex), ex[0].id, dropped
    (1, 'record-1', [])
    """
    examples: list[Example] = []
    dropped: list[dict] = []
    for i, raw in enumerate(records, start=1):
        rec = raw if isinstance(raw, Record) else record_from_row(
            raw, default_id=f"record-{i}", where=f"record {i}"
        )
        if rec.output is None and require_response:
            raise SpectrumKDError(f"{rec.where}: missing the output/response field (id {rec.id!r})")
        prompt = render_prompt(template, rec, tokenizer=tokenizer, few_shot=few_shot)
        if require_response and not rec.output.strip():
            dropped.append(_drop(rec.id, "empty_response", None, None, None))
            continue
        output = rec.output if require_response else None
        input_ids, labels = tokenize_example(tokenizer, prompt, output)
        n_prompt = sum(1 for label in labels if label == IGNORE_INDEX)
        if n_prompt > max_prompt_length:
            dropped.append(
                _drop(rec.id, "prompt_too_long", n_prompt, len(input_ids), max_prompt_length)
            )
            continue
        if len(input_ids) > max_length:
            dropped.append(_drop(rec.id, "too_long", n_prompt, len(input_ids), max_length))
            continue
        examples.append(
            Example(
                id=rec.id,
                prompt=prompt,
                response=rec.output,
                references=list(rec.references),
                input_ids=input_ids,
                labels=labels,
            )
        )
    if records and not examples:
        reasons = Counter(d["reason"] for d in dropped)
        raise SpectrumKDError(
            f"all {len(records)} examples were dropped ({dict(reasons)}); "
            f"max_prompt_length={max_prompt_length}, max_length={max_length}"
        )
    return examples, dropped


def _drop(rid, reason: str, n_prompt, n_total, limit) -> dict:
    return {
        "id": rid,
        "reason": reason,
        "prompt_tokens": n_prompt,
        "total_tokens": n_total,
        "limit": limit,
    }


def write_dropped(path: str | Path, dropped: Sequence[dict]) -> Path:
    """Write ``dropped`` as JSON Lines (one object per dropped example); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for item in dropped:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    return path


def dataset_fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the examples' ids, token ids and labels (covers data, template, tokenizer, filters).

    >>> dataset_fingerprint([Example(1, "p", "r", [], [5, 6], [-100, 6])])
    '8520632102aed154'
    """
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.input_ids, ex.labels], separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
