"""Shared vocabulary between teacher and student: tokenizer check and logit slicing.

Teacher and student must share a tokenizer; their LM heads may still be padded to different sizes
(Qwen2.5-7B has 152064 rows, Qwen2.5-1.5B 151936, for the same 151665-token tokenizer). The rows past
the tokenizer length are never produced by the tokenizer, so both logit tensors are *sliced* to the
shared length — never zero-padded, which would give phantom tokens probability mass.

Not here: loading tokenizers (:mod:`spectrumkd.models` does; its ``check_same_tokenizer`` is the
full check). :func:`check_tokenizers_match` is duck-typed (``get_vocab()``), so this module needs no
transformers import.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from spectrumkd import SpectrumKDError


def check_tokenizers_match(student_tokenizer: Any, teacher_tokenizer: Any) -> int:
    """Raise :class:`SpectrumKDError` unless both tokenizers map the same strings to the same ids.

    Compares ``get_vocab()`` (token → id, added tokens included) and returns the shared tokenizer
    length ``len(vocab)``, the ``vocab_size`` to pass to :func:`shared_vocab_logits`. The message
    names the first token that differs.

    >>> class Tok:
    ...     def __init__(self, v): self.v = v
    ...     def get_vocab(self): return dict(self.v)
    >>> check_tokenizers_match(Tok({"a": 0, "b": 1}), Tok({"b": 1, "a": 0}))
    2
    """
    vs, vt = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if vs == vt:
        return len(vs)
    for token in sorted(
        set(vs) | set(vt), key=lambda tok: min(vs.get(tok, 1 << 62), vt.get(tok, 1 << 62))
    ):
        if vs.get(token) != vt.get(token):
            raise SpectrumKDError(
                f"teacher and student tokenizers differ (student {len(vs)} tokens, teacher {len(vt)}): "
                f"token {token!r} has id {vs.get(token)} in the student and {vt.get(token)} in the "
                "teacher; white-box KD needs one shared tokenizer"
            )
    raise AssertionError("unreachable: vocabularies differ but no token differs")


def shared_vocab_logits(
    student_logits: Tensor, teacher_logits: Tensor, vocab_size: int
) -> tuple[Tensor, Tensor]:
    """Slice both ``(..., V_s)`` / ``(..., V_t)`` logits to ``(..., vocab_size)`` (views, no copy).

    ``vocab_size`` is the shared tokenizer length (from :func:`check_tokenizers_match`); it must not
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
