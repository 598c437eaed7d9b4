"""Evaluation: the paper's protocols for instruction following, math and code, judge, statistics.

Modules: ``generation`` (batched HF generation, MiniLLM / greedy protocols), ``rouge``
(MiniLLM's ROUGE-L), ``sets`` (DollyEval, SelfInst, VicunaEval, S-NI, UnNI, GSM8K, MATH,
HumanEval, MBPP), ``math`` (Figure 7 prompt, answer extraction), ``code`` (Figure 8 prompt,
sandboxed execution, pass@k), ``judge`` (Figure 6 pairwise LLM-as-a-judge), ``stats`` (Wilcoxon),
``results`` (results.json), ``suites`` (the ``spectrumkd eval`` runner), ``compare`` (Table 1),
``panel`` (the metric panel: held-out CE, KL to the teacher, entropy, the teacher's NLL of the
samples, greedy ROUGE-L), ``forced`` (teacher-forced per-token statistics, shared with scoring),
``teacher_logprobs`` (the teacher's full log-probs on reference rows, cached on disk).

``rouge_l`` is imported eagerly (no torch); ``generate`` is loaded on first use, so
``from spectrumkd.evaluate import rouge_l`` stays light.
"""

from __future__ import annotations

from typing import Any

from spectrumkd.evaluate.rouge import mean_rouge_l, rouge_l

__all__ = ["compare_runs", "generate", "mean_rouge_l", "render_markdown", "rouge_l"]

_LAZY = {
    "generate": ("spectrumkd.evaluate.generation", "generate"),
    "compare_runs": ("spectrumkd.evaluate.compare", "compare_runs"),
    "render_markdown": ("spectrumkd.evaluate.compare", "render_markdown"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'spectrumkd.evaluate' has no attribute {name!r}")
