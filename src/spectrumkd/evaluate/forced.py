"""Teacher-forced statistics of a causal LM at the positions that predict response tokens.

One forward pass over a padded batch (labels -100 on prompts and padding) gives, per row, the sum
over its response tokens y_t of

- ``ce``: −log q(y_t | x, y_<t), the token cross-entropy (nats);
- ``entropy``: H(q(· | x, y_<t)) = −Σ_v q_v log q_v, the model's predictive entropy (nats);
- ``kl``: KL(p‖q) = Σ_v p_v (log p_v − log q_v) at τ = 1 over the shared vocabulary, p from given
  teacher log-probabilities (:func:`spectrumkd.losses.divergence_from_log_probs`, ``fkl``),

and ``count``, the number of response tokens. Dividing a row's sum by its count gives the row's
mean (nats/token). This is the one code path of the scoring metrics ``ce``/``entropy``
(:mod:`spectrumkd.scoring.metrics`, hence also the student card's CE) and of the metric panel
(:mod:`spectrumkd.evaluate.panel`), so "held-out CE" means the same thing everywhere.

CE and entropy use the model's full output head (as scoring always has); the KL slices the student
to the teacher's width (the shared tokenizer length, :func:`spectrumkd.losses.shared_vocab_logits`)
and renormalises there, as the KD loss does. Logits are float32; sums are float64.
Not here: batching, caching the teacher, averaging over rows (callers do).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from spectrumkd import SpectrumKDError

__all__ = ["IGNORE_INDEX", "STATS", "response_logits", "row_sums"]

IGNORE_INDEX = -100
STATS = ("ce", "entropy", "kl")


def _supports_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def response_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B, K, V] float32, targets [B, K])``: predictions for positions ``start..T-2``.

    ``targets`` are the shifted labels (-100 where nothing is predicted); ``start`` is the first
    position that predicts a response token anywhere in the batch. Logits are computed only from
    ``start`` on (``logits_to_keep``) when the model supports it.
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    targets = labels[:, 1:]  # [B, T-1]: position t predicts token t+1
    active = (targets != IGNORE_INDEX).any(dim=0)
    if not bool(active.any()):
        raise SpectrumKDError("a batch has no response tokens to score")
    start = int(active.nonzero()[0])
    width = input_ids.shape[1]
    kwargs = {}
    if _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.arange(start, width - 1, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logits = out.logits
    if "logits_to_keep" not in kwargs:
        logits = logits[:, start : width - 1]
    return logits.float(), targets[:, start:]


def row_sums(
    model,
    batch: dict[str, torch.Tensor],
    *,
    stats: Sequence[str] = ("ce",),
    teacher_logprobs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-row sums ``[B]`` (float64, on the model's device) of ``stats`` and the token ``count``.

    ``teacher_logprobs`` ``[N, V_t]`` (needed for ``kl``) are the teacher's log-probabilities at
    the batch's N response positions in row-major order (row 0's tokens first), as
    :class:`spectrumkd.evaluate.teacher_logprobs.TeacherLogprobs` returns them. Run it under
    ``torch.no_grad()``; the model's mode (eval/train) is the caller's.

    >>> from spectrumkd.models import tiny_random_model
    >>> from spectrumkd.data import Collator, Example
    >>> batch = Collator(1)([Example(0, "", "", [], [5, 6, 7], [-100, 6, 7])])
    >>> sums = row_sums(tiny_random_model(layers=1, hidden=32), batch, stats=("ce", "entropy"))
    >>> sorted(sums), sums["count"].tolist()
    (['ce', 'count', 'entropy'], [2])
    """
    unknown = sorted(set(stats) - set(STATS))
    if unknown:
        raise SpectrumKDError(f"unknown statistics {unknown}; use {list(STATS)}")
    logits, targets = response_logits(model, batch)  # [B, K, V], [B, K]
    keep = targets != IGNORE_INDEX
    chosen = logits[keep]  # [N, V] response positions only
    logprobs = torch.log_softmax(chosen, dim=-1)  # [N, V]
    per_token: dict[str, torch.Tensor] = {}
    if "ce" in stats:
        per_token["ce"] = F.nll_loss(logprobs, targets[keep], reduction="none")  # [N]
    if "entropy" in stats:
        per_token["entropy"] = -(logprobs.exp() * logprobs).sum(dim=-1)  # [N]
    if "kl" in stats:
        per_token["kl"] = _kl(chosen, logprobs, teacher_logprobs)  # [N]
    rows = keep.nonzero()[:, 0]
    out = {}
    for name, values in per_token.items():
        totals = torch.zeros(keep.shape[0], dtype=torch.float64, device=values.device)
        out[name] = totals.index_add_(0, rows, values.to(torch.float64))
    out["count"] = keep.sum(dim=1)
    return out


def _kl(chosen: torch.Tensor, logprobs: torch.Tensor, teacher_logprobs: torch.Tensor | None):
    """Per-token KL(teacher‖student) ``[N]`` over the teacher's vocabulary width."""
    from spectrumkd.losses import divergence_from_log_probs, shared_vocab_logits

    if teacher_logprobs is None:
        raise SpectrumKDError("the kl statistic needs the teacher's log-probabilities")
    if teacher_logprobs.shape[0] != chosen.shape[0]:
        raise SpectrumKDError(f"teacher log-probs cover {teacher_logprobs.shape[0]} positions, the "
                              f"batch has {chosen.shape[0]} response tokens")
    vocab = teacher_logprobs.shape[-1]
    student, teacher = shared_vocab_logits(chosen, teacher_logprobs.to(chosen.device), vocab)
    log_q = logprobs if student.shape[-1] == chosen.shape[-1] else torch.log_softmax(student, -1)
    return divergence_from_log_probs("fkl", log_q, teacher.float())
