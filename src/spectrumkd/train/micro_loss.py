"""The loss of one micro-batch: forwards and the objective, shared by training and validation.

:func:`micro_loss` moves a collated batch to the device, runs the student (and the frozen
teacher, or reads the cached top-k targets), and calls :func:`objective_loss`, the one place where
the train package calls the loss functions of :mod:`spectrumkd.losses`. Labels are shifted with
-100 appended, so they align with the *unsliced* positions ``[B, L]``: the same loss (the last
position predicts nothing) without a ``[tokens × vocab]`` copy of a ``[:, :-1]`` view.

Logits only where the loss reads them: the models get ``logits_to_keep`` = the ``[B, L]`` mask of
scored positions (transformers' boolean form), so the LM heads run on the response tokens only and
return ``[N, V]`` — not on prompts and padding, which are most of a Dolly batch's positions. That
is most of a step's ``[tokens × vocab]`` memory and LM-head compute (``benchmarks/
bench_throughput.py``); the loss is the same sum over the same tokens. A model whose forward
ignores ``logits_to_keep`` returns every position, which is then masked here.

Not here: autocast, backward, gradient sync and the token count over accumulation and processes
(:mod:`spectrumkd.train.loop` passes ``num_tokens``); validation's bookkeeping
(:mod:`spectrumkd.train.validation`).
"""

from __future__ import annotations

import torch

from spectrumkd.losses import (
    KDObjective,
    default_chunk_size,
    kd_loss,
    shared_vocab_logits,
    sparse_kd_loss,
)
from spectrumkd.train.config import LossConfig

__all__ = ["micro_loss", "objective_loss", "shifted_labels"]

CE_ONLY = KDObjective("none", ce_weight=1.0)  # no targets: plain SFT, or a cached run's validation


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels[:, 1:]`` with -100 appended: position t is scored on token t + 1 ([B, L])."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)


def objective_loss(loss: LossConfig, student_logits, targets, labels, *, temperature: float,
                   num_tokens: int, vocab: int):
    """The objective of ``loss`` on one micro-batch: a :class:`spectrumkd.losses.KDLoss`.

    ``student_logits`` are ``[..., V]`` (``[N, V]`` from :func:`micro_loss`) with ``labels``
    ``[...]``; ``targets`` is None (plain SFT: CE only), the teacher's logits ``[..., V']`` (online
    KD, sliced with the student's to the shared vocabulary ``vocab``), or the cache's
    ``(token ids, log-probs, tail log-mass)``, ``[..., k]``, ``[..., k]``, ``[...]``. Sums over
    response tokens are divided
    by ``num_tokens``. Online KD takes the chunked path (analytic gradients, cache-sized chunks)
    unless ``loss.chunk_size`` sets the chunk: same value and gradients as dense autograd, ~2×
    faster and far less memory.
    """
    if targets is None:
        return kd_loss(student_logits[..., :vocab], None, labels, objective=CE_ONLY,
                       num_tokens=num_tokens, chunk_size=loss.chunk_size)  # fmt: skip
    objective = loss.objective(temperature)
    if isinstance(targets, tuple):
        t_ids, t_logprobs, t_tail = targets
        return sparse_kd_loss(student_logits[..., :vocab], t_ids, t_logprobs, labels,
                              teacher_tail=t_tail, objective=objective, num_tokens=num_tokens)  # fmt: skip
    s_logits, t_logits = shared_vocab_logits(student_logits, targets, vocab)
    return kd_loss(s_logits, t_logits, labels, objective=objective, num_tokens=num_tokens,
                   chunk_size=loss.chunk_size or default_chunk_size(vocab))  # fmt: skip


def micro_loss(model, batch: dict, *, loss: LossConfig, temperature: float, num_tokens: int,
               vocab: int, device, teacher=None, teacher_cache=None, ids=None):
    """Forward ``model`` on ``batch`` (a :class:`spectrumkd.data.Collator` output) and return the
    objective (:func:`objective_loss`).

    The targets: none for ``loss.mode=sft`` or when neither ``teacher`` nor ``teacher_cache`` is
    given (CE only; validation of a cached-teacher run); else ``teacher_cache.batch(ids, ...)``
    (``ids``: the batch's example ids); else a no-grad forward of ``teacher``.
    """
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    labels = shifted_labels(batch["labels"]).to(device)  # [B, L]
    scored = labels != -100  # [B, L]: the positions the loss reads
    s_logits = _scored_logits(model, input_ids, attention_mask, scored)  # [N, V]
    targets = None
    if loss.mode != "sft" and teacher_cache is not None:
        targets = tuple(t[scored] for t in teacher_cache.batch(ids, labels))  # [N, k] ×2, [N]
    elif loss.mode != "sft" and teacher is not None:
        with torch.no_grad():
            targets = _scored_logits(teacher, input_ids, attention_mask, scored)  # [N, V']
    return objective_loss(loss, s_logits, targets, labels[scored], temperature=temperature,
                          num_tokens=num_tokens, vocab=vocab)


def _scored_logits(model, input_ids, attention_mask, scored):
    """``model``'s logits at the ``scored`` positions only, ``[N, V]`` (see the module docstring)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=scored).logits
    return logits[scored] if logits.dim() == 3 else logits
