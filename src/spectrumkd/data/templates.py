"""Prompt templates: the paper's Figure 5 (Dolly/MiniLLM), Figure 7 (math), Figure 8 (code), chat.

- ``dolly``: MiniLLM's exact text (the paper's Figure 5 is adapted from it); with a non-empty input
  it is the "paired with an input" variant. For rows of DollyEval it reproduces their ``prompt``
  field byte for byte (tested on all 500 rows).
- ``math``: Figure 7, optionally preceded by few-shot examples (problem + solution) drawn from the
  training split with :func:`math_few_shot`.
- ``code``: Figure 8; the response continues after "…passes corresponding tests:\\n".
- ``chat``: the tokenizer's own chat template (one user turn: instruction, then input).
- ``raw``: the row's own ``prompt`` field, unchanged.

What it does not do: tokenize. The figures' line wrapping in the PDF is layout, not text: each
sentence is one line here. Figure 7 prints ``\\boxed{ }``; we use ``\\boxed{}`` as Qwen2.5-Math does.
References: MiniLLM ``tools/process_data_dolly.py``; Qwen2.5-Math and Qwen2.5-Coder evaluation
prompts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from spectrumkd import SpectrumKDError
from spectrumkd.data.formats import Record, record_from_row

DOLLY_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
DOLLY_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
MATH = (
    "### Problem:\n{instruction}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}.\n\n"
    "### Solution:\n"
)
CODE = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:\n\n"
    "### Problem:\n{instruction}\n\n"
    "### Response:\n"
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:\n"
)
TEMPLATES = ("dolly", "math", "code", "chat", "raw")


def _as_record(record: Record | Mapping) -> Record:
    if isinstance(record, Record):
        return record
    return record_from_row(record, default_id="record", where="record")


def render_prompt(
    template: str,
    record: Record | Mapping,
    *,
    tokenizer=None,
    few_shot: Sequence[Record | Mapping] = (),
) -> str:
    """The prompt text of ``record`` in ``template`` (one of :data:`TEMPLATES`).

    >>> print(render_prompt("dolly", {"instruction": "Name a colour.", "input": ""}), end="|")
    Below is an instruction that describes a task. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Name a colour.
    <BLANKLINE>
    ### Response:
    |
    """
    rec = _as_record(record)
    if template == "dolly":
        if rec.input:
            return DOLLY_WITH_INPUT.format(instruction=rec.instruction, input=rec.input)
        return DOLLY_NO_INPUT.format(instruction=rec.instruction)
    if template == "math":
        shots = []
        for shot in map(_as_record, few_shot):
            if shot.output is None:
                raise SpectrumKDError(f"{shot.where}: a few-shot example needs a solution")
            shots.append(MATH.format(instruction=shot.instruction) + shot.output + "\n\n")
        return "".join(shots) + MATH.format(instruction=rec.instruction)
    if template == "code":
        return CODE.format(instruction=rec.instruction)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise SpectrumKDError("template 'chat' needs a tokenizer with a chat template")
        content = rec.instruction + (f"\n\n{rec.input}" if rec.input else "")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    if template == "raw":
        prompt = rec.raw.get("prompt")
        if not isinstance(prompt, str):
            raise SpectrumKDError(f"{rec.where}: template 'raw' needs a string 'prompt' field")
        return prompt
    raise SpectrumKDError(f"unknown template {template!r}; use one of {TEMPLATES}")


def math_few_shot(train_records: Sequence[Record], k: int = 8, *, seed: int = 0) -> list[Record]:
    """``k`` few-shot examples drawn without replacement from the training split (seeded).

    >>> recs = [Record(id=i, instruction=f"q{i}", output=f"a{i}") for i in range(20)]
    >>> [r.id for r in math_few_shot(recs, 3, seed=0)] == [r.id for r in math_few_shot(recs, 3, seed=0)]
    True
    """
    usable = [r for r in train_records if r.output]
    if len(usable) < k:
        raise SpectrumKDError(f"need {k} few-shot examples with solutions, have {len(usable)}")
    return random.Random(seed).sample(usable, k)
