"""MiniLLM's ROUGE-L for instruction following: ``rouge_l(prediction=..., references=[...])``.

What it computes, exactly as MiniLLM's / DistiLLM's ``rouge_metric.py`` (itself taken from the
Super-NaturalInstructions evaluation): ``rouge_score.rouge_scorer.RougeScorer(["rougeL"],
use_stemmer=True)`` scores the prediction against each reference with ``score(target=reference,
prediction=prediction)``; the F-measure of the best reference is kept and multiplied by 100.
There is no extra normalisation: rouge-score's default tokenizer lowercases, replaces every
character outside ``[a-z0-9]`` with a space, and stems tokens longer than 3 characters with the
Porter stemmer. A set score is the mean of the per-example scores.

Not here: ROUGE-Lsum, bootstrap aggregation (rouge-score's ``BootstrapAggregator``), the
``xlingual`` tokenizer of Super-NI. Predictions are expected already stripped of the prompt and
of special tokens (see :mod:`spectrumkd.evaluate.generation`).

References: Gu et al. 2023 (MiniLLM), github.com/microsoft/LMOps ``minillm/rouge_metric.py``;
Lin 2004 (ROUGE); google-research/rouge ``rouge_scorer.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from spectrumkd import SpectrumKDError


@functools.lru_cache(maxsize=1)
def _scorer():  # a pure function of no arguments: building the stemmer once is only a speed-up
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SpectrumKDError(
            "ROUGE-L needs the rouge-score package: pip install 'spectrumkd[eval]'"
        ) from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(*, prediction: str, references: str | Sequence[str]) -> float:
    """MiniLLM's ROUGE-L F-measure of ``prediction``, the best over ``references``, in 0–100.

    ``references`` may be one string or a non-empty list of strings (S-NI has several).

    >>> rouge_l(prediction="testing one two", references=["testing one"])  # P=1, R=2/3
    80.0
    >>> rouge_l(prediction="The cats sat.", references=["a cat sits", "the cat sat"])
    100.0
    >>> rouge_l(prediction="", references="anything")
    0.0
    """
    if isinstance(references, str):
        references = [references]
    if not isinstance(prediction, str):
        raise SpectrumKDError(f"prediction must be a string, got {type(prediction).__name__}")
    if len(references) == 0:
        raise SpectrumKDError("rouge_l needs at least one reference")
    scorer = _scorer()
    best = 0.0
    for reference in references:
        if not isinstance(reference, str):
            raise SpectrumKDError(f"references must be strings, got {type(reference).__name__}")
        best = max(best, scorer.score(target=reference, prediction=prediction)["rougeL"].fmeasure)
    return 100.0 * best


def mean_rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> float:
    """Mean :func:`rouge_l` over paired predictions and references (MiniLLM's set score).

    >>> round(mean_rouge_l(["a b", "c"], [["a b"], ["d"]]), 2)
    50.0
    """
    if len(predictions) != len(references):
        raise SpectrumKDError(
            f"{len(predictions)} predictions but {len(references)} reference lists"
        )
    if not predictions:
        raise SpectrumKDError("mean_rouge_l needs at least one prediction")
    total = sum(rouge_l(prediction=p, references=r) for p, r in zip(predictions, references))
    return total / len(predictions)
