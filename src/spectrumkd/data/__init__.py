"""Data: load records, render prompt templates, tokenize with prompt masks, filter, collate.

``load_records`` reads JSONL / JSON / Parquet files or a Hugging Face hub dataset and maps fields;
``build_examples`` renders a template, tokenizes ``prompt + response`` (response = output + EOS) with
``labels = -100`` on the prompt, and drops (never truncates) over-long examples; ``Collator`` pads a
batch to its longest example. See docs/design.md §3.

``Collator`` (torch) loads on first use, so the formats and templates import without torch.
"""

from __future__ import annotations

from typing import Any

from spectrumkd.data.formats import Record, load_records
from spectrumkd.data.templates import TEMPLATES, math_few_shot, render_prompt
from spectrumkd.data.tokenize import (
    Example,
    build_examples,
    dataset_fingerprint,
    tokenize_example,
    write_dropped,
)

__all__ = [
    "TEMPLATES",
    "Collator",
    "Example",
    "Record",
    "build_examples",
    "dataset_fingerprint",
    "load_records",
    "math_few_shot",
    "render_prompt",
    "tokenize_example",
    "write_dropped",
]


def __getattr__(name: str) -> Any:
    if name == "Collator":
        from spectrumkd.data.collate import Collator

        return Collator
    raise AttributeError(f"module 'spectrumkd.data' has no attribute {name!r}")
