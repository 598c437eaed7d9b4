"""Pad a batch of tokenized examples to its longest one (right padding).

Returns ``input_ids`` (padded with ``pad_token_id``), ``attention_mask`` (1 on tokens) and
``labels`` (*unshifted*; -100 on the prompt and on padding — the loss caller shifts). What it does
not do: truncate, or pad to a fixed length (except ``pad_to_multiple_of``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from spectrumkd.data.tokenize import IGNORE_INDEX, Example


class Collator:
    """``Collator(pad_token_id)(batch) -> {"input_ids", "attention_mask", "labels"}`` LongTensors.

    >>> c = Collator(pad_token_id=1)
    >>> out = c([Example(0, "", "", [], [5, 6, 7], [-100, 6, 7]), Example(1, "", "", [], [8], [8])])
    >>> out["input_ids"].tolist(), out["attention_mask"].tolist(), out["labels"].tolist()
    ([[5, 6, 7], [8, 1, 1]], [[1, 1, 1], [1, 0, 0]], [[-100, 6, 7], [8, -100, -100]])
    """

    def __init__(self, pad_token_id: int, *, pad_to_multiple_of: int | None = None) -> None:
        if pad_token_id is None:
            raise ValueError("Collator needs a pad_token_id (see spectrumkd.models.ensure_pad_token)")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, batch: Sequence[Example | Mapping]) -> dict[str, torch.Tensor]:
        rows = [
            (ex.input_ids, ex.labels) if isinstance(ex, Example) else (ex["input_ids"], ex["labels"])
            for ex in batch
        ]
        width = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = torch.as_tensor(ids, dtype=torch.long)
            labels[i, :n] = torch.as_tensor(labs, dtype=torch.long)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
