"""Shared vocabulary between teacher and student: logit slicing.

Teacher and student must share a tokenizer; their LM heads may still be padded to different sizes
(Qwen2.5-7B has 152064 rows, Qwen2.5-1.5B 151936, for the same 151665-token tokenizer). The rows past
the tokenizer length are never produced by the tokenizer, so both logit tensors are *sliced* to the
shared length — never zero-padded, which would give phantom tokens probability mass.

Not here: loading tokenizers and checking that they match
(:func:`spectrumkd.models.check_same_tokenizer` is the one tokenizer check; it returns the shared
length to pass here).
"""

from __future__ import annotations

from torch import Tensor

from spectrumkd import SpectrumKDError


def shared_vocab_logits(
    student_logits: Tensor, teacher_logits: Tensor, vocab_size: int
) -> tuple[Tensor, Tensor]:
    """Slice both ``(..., V_s)`` / ``(..., V_t)`` logits to ``(..., vocab_size)`` (views, no copy).

    ``vocab_size`` is the shared tokenizer length (``models.check_same_tokenizer``); it must not
    exceed either V — padding is never invented. End point: ``vocab_size == V_s == V_t`` returns the
    inputs unchanged.

    >>> import torch
    >>> s, t = shared_vocab_logits(torch.zeros(2, 5), torch.zeros(2, 7), 5)
    >>> tuple(s.shape), tuple(t.shape)
    ((2, 5), (2, 5))
    """
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if not 1 <= vocab_size <= min(vs, vt):
        raise SpectrumKDError(
            f"shared vocab_size {vocab_size} must be in [1, min(student {vs}, teacher {vt})]; the "
            "tokenizer is longer than an LM head, so these models cannot share it"
        )
    return student_logits[..., :vocab_size], teacher_logits[..., :vocab_size]
