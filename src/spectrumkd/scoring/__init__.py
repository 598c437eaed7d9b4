"""Difficulty scoring: one pass of the untrained student over the training set (DESIGN.md §4).

``score_examples`` returns per-example scores in dataset order (bucketed by length, batched under a
token budget, one or many processes); ``run_scoring`` also writes, resumes and reuses the scores
file. Metrics: ``ce`` (mean or sum token cross-entropy over the response), ``entropy``,
``rougel`` (1 − ROUGE-L F of the greedy answer) and ``length`` (response tokens).
"""

from spectrumkd.scoring.batching import make_batches, padded_tokens
from spectrumkd.scoring.metrics import METRICS, REDUCTIONS, batch_scores
from spectrumkd.scoring.runner import run_scoring, score_examples
from spectrumkd.scoring.scores_file import make_header, read_partial

__all__ = [
    "METRICS",
    "REDUCTIONS",
    "batch_scores",
    "make_batches",
    "make_header",
    "padded_tokens",
    "read_partial",
    "run_scoring",
    "score_examples",
]
