"""Per-epoch validation: the loss on a validation subset and ROUGE-L of greedy answers.

``val_ce`` is the student's mean token cross-entropy on the references; ``val_loss`` is the
training objective at the epoch's τ when the teacher is in memory (online KD), and equals
``val_ce`` otherwise (SFT, or a cached-teacher run). ``val_rougeL`` is MiniLLM's ROUGE-L (0–100)
of greedy answers of at most ``max_new_tokens`` tokens — short on purpose, to keep validation a
small share of the run; the paper selects the checkpoint by validation ROUGE-L.

The held-out curve (:func:`heldout_curve`, at the points of :func:`curve_steps`) is the metric
panel's teacher-forced part on a fixed set of held-out rows: mean response CE, KL(teacher‖student)
at τ = 1 over the full vocabulary and the student's entropy (:func:`spectrumkd.evaluate.panel.
heldout`), against teacher log-probs computed once before training, so it works while the
teacher is not in memory (teacher-cache runs).

Runs on one process (the main one) with the unwrapped student. Not here: the full evaluation
protocol (sampling at T = 1 over five seeds: ``spectrumkd evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spectrumkd.data import Collator, Example
from spectrumkd.evaluate.generation import generate
from spectrumkd.evaluate.panel import heldout
from spectrumkd.evaluate.rouge import mean_rouge_l
from spectrumkd.evaluate.teacher_logprobs import TeacherLogprobs
from spectrumkd.train.config import LossConfig
from spectrumkd.train.micro_loss import micro_loss

__all__ = ["HeldOut", "curve_steps", "heldout_curve", "validate"]


@torch.no_grad()
def validate(
    student,
    tokenizer,
    examples: Sequence[Example],
    *,
    loss: LossConfig | None = None,
    teacher=None,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> dict[str, float]:
    """``{"val_loss", "val_ce", "val_rougeL"}`` of ``student`` on ``examples``.

    ``val_loss`` is the training objective ``loss`` (the loop's own
    :func:`~spectrumkd.train.micro_loss.micro_loss`) at ``temperature`` with ``teacher``; CE alone
    without a teacher or without ``loss``.
    """
    was_training = student.training
    student.eval()
    try:
        val_loss, val_ce = _mean_losses(student, tokenizer, examples, loss or LossConfig(mode="sft"),
                                        teacher=teacher, temperature=temperature,
                                        batch_size=batch_size)
        answers = generate(
            student, tokenizer, [ex.prompt for ex in examples], do_sample=False,
            max_new_tokens=max_new_tokens, batch_size=batch_size, no_repeat_ngram_size=0,
        )  # fmt: skip
    finally:
        student.train(was_training)
    refs = [ex.references or [ex.response or ""] for ex in examples]
    return {"val_loss": val_loss, "val_ce": val_ce, "val_rougeL": mean_rouge_l(answers, refs)}


def _mean_losses(student, tokenizer, examples, loss: LossConfig, *, teacher, temperature: float,
                 batch_size: int) -> tuple[float, float]:
    """Token-weighted means of the objective and of CE over ``examples``, batch by batch."""
    collate = Collator(tokenizer.pad_token_id)
    device = next(student.parameters()).device
    loss_sum = ce_sum = 0.0
    n_tokens = 0
    for start in range(0, len(examples), batch_size):
        batch = collate(list(examples[start : start + batch_size]))
        count = int((batch["labels"][:, 1:] != -100).sum())
        out = micro_loss(student, batch, loss=loss, temperature=temperature, num_tokens=count,
                         vocab=len(tokenizer), device=device, teacher=teacher)
        loss_sum += float(out.total) * count
        ce_sum += float(out.ce) * count
        n_tokens += count
    return loss_sum / max(n_tokens, 1), ce_sum / max(n_tokens, 1)


@dataclass(frozen=True)
class HeldOut:
    """The held-out curve's rows, the teacher's log-probs on them (None: no KL), the pad id."""

    examples: Sequence[Example]
    teacher: TeacherLogprobs | None
    pad_id: int


def curve_steps(total_steps: int, points: int) -> frozenset[int]:
    """Step 0 and ``points`` evenly spaced optimizer steps ending at ``total_steps`` (fewer when
    the budget has fewer steps); empty when ``points`` is 0.

    >>> sorted(curve_steps(24, 4)), sorted(curve_steps(3, 4)), curve_steps(10, 0)
    ([0, 6, 12, 18, 24], [0, 1, 2, 3], frozenset())
    """
    if points == 0:
        return frozenset()
    return frozenset({0} | {math.ceil(k * total_steps / points) for k in range(1, points + 1)})


def heldout_curve(student, rows: HeldOut, *, batch_size: int = 8) -> dict:
    """``{"heldout_ce", "entropy", "heldout_kl" (with the teacher's log-probs), "rows",
    "tokens"}`` of ``student`` on the held-out rows (its train/eval mode is kept)."""
    return heldout(student, rows.examples, pad_id=rows.pad_id, teacher=rows.teacher,
                   batch_size=batch_size)
