"""Difficulty scoring: one pass of the untrained student over the training set (docs/design.md §4).

``score_examples`` returns per-example scores in dataset order (bucketed by length, batched under a
token budget, one or many processes); ``run_scoring`` also writes, resumes and reuses the scores
file; ``score(ScoreOptions(...))`` (:mod:`~spectrumkd.scoring.pipeline`) is the whole
``spectrumkd score`` pipeline, model opening included. Metrics: ``ce`` (mean or sum token cross-entropy over the response), ``entropy``,
``rougel`` (1 − ROUGE-L F of the greedy answer) and ``length`` (response tokens).

The names below load their modules on first use, so ``from spectrumkd.scoring.metrics import
METRICS`` (the command line's choices) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "METRICS",
    "REDUCTIONS",
    "ScoreOptions",
    "batch_scores",
    "make_batches",
    "make_header",
    "padded_tokens",
    "read_partial",
    "run_scoring",
    "score",
    "score_examples",
]

_LAZY = {
    "make_batches": "batching", "padded_tokens": "batching",
    "METRICS": "metrics", "REDUCTIONS": "metrics", "batch_scores": "metrics",
    "run_scoring": "runner", "score_examples": "runner",
    "ScoreOptions": "pipeline", "score": "pipeline",
    "make_header": "scores_file", "read_partial": "scores_file",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"spectrumkd.scoring.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'spectrumkd.scoring' has no attribute {name!r}")
