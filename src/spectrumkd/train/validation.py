"""Per-epoch validation: the loss on a validation subset and ROUGE-L of greedy answers.

``val_ce`` is the student's mean token cross-entropy on the references; ``val_loss`` is the
training objective at the epoch's τ when the teacher is in memory (online KD), and equals
``val_ce`` otherwise (SFT, or a cached-teacher run). ``val_rougeL`` is MiniLLM's ROUGE-L (0–100)
of greedy answers of at most ``max_new_tokens`` tokens — short on purpose, to keep validation a
small share of the run; the paper selects the checkpoint by validation ROUGE-L.

Runs on one process (the main one) with the unwrapped student. Not here: the full evaluation
protocol (sampling at T = 1 over five seeds: ``spectrumkd evaluate``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spectrumkd.data import Collator, Example
from spectrumkd.evaluate.generation import generate
from spectrumkd.evaluate.rouge import mean_rouge_l
from spectrumkd.losses import kd_loss, shared_vocab_logits

__all__ = ["validate"]


@torch.no_grad()
def validate(
    student,
    tokenizer,
    examples: Sequence[Example],
    *,
    teacher=None,
    temperature: float = 1.0,
    loss_kwargs: dict | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> dict[str, float]:
    """``{"val_loss", "val_ce", "val_rougeL"}`` of ``student`` on ``examples``."""
    was_training = student.training
    student.eval()
    collate = Collator(tokenizer.pad_token_id)
    device = next(student.parameters()).device
    vocab = len(tokenizer)
    loss_kwargs = dict(loss_kwargs or {})
    ce_sum = loss_sum = 0.0
    n_tokens = 0
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]))
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            labels = batch["labels"][:, 1:].to(device)  # [B, L-1]
            count = int((labels != -100).sum())
            s_logits = student(input_ids=ids, attention_mask=mask).logits[:, :-1]
            if teacher is not None and loss_kwargs.get("divergence", "none") != "none":
                t_logits = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1]
                s_logits, t_logits = shared_vocab_logits(s_logits, t_logits, vocab)
                out = kd_loss(s_logits, t_logits, labels, temperature=temperature,
                              num_tokens=count, **loss_kwargs)
                loss_sum += float(out.total) * count
            else:
                out = kd_loss(s_logits[..., :vocab], None, labels, divergence="none",
                              ce_weight=1.0, num_tokens=count)
                loss_sum += float(out.ce) * count
            ce_sum += float(out.ce) * count
            n_tokens += count
        answers = generate(
            student, tokenizer, [ex.prompt for ex in examples], do_sample=False,
            max_new_tokens=max_new_tokens, batch_size=batch_size, no_repeat_ngram_size=0,
        )  # fmt: skip
    finally:
        student.train(was_training)
    refs = [ex.references or [ex.response or ""] for ex in examples]
    return {
        "val_loss": loss_sum / max(n_tokens, 1),
        "val_ce": ce_sum / max(n_tokens, 1),
        "val_rougeL": mean_rouge_l(answers, refs),
    }
