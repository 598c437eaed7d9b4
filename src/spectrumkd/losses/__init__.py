"""KD objectives: six per-token divergences, the paper's objective, chunked/fused and sparse paths.

torch only (never transformers/accelerate). Notation and conventions: docs/design.md §6 — p = teacher,
q = student, both ``softmax(logits / τ)`` in float32; objective ``ce_weight·CE + (1−ce_weight)·τ²·D``
summed over unmasked tokens and divided by the caller's token count.

- :mod:`.objective` — :class:`KDObjective` (the objective's parameters, checked once) and the
  anchor presets (:func:`preset`); torch-free.
- :mod:`.divergences` — ``fkl, rkl, jsd, tvd, skl, srkl`` per token: one table of values and
  analytic gradients over log-probabilities, with the β/skew end points resolved in one place.
- :mod:`.reduction` — :class:`KDLoss`, masked sums, the token denominator, the weighted total.
- :mod:`.dense` — :func:`kd_loss` on full logits (hands over to the chunked path on request).
- :mod:`.chunked` — :func:`chunked_kd_loss` (from logits) and :func:`fused_kd_loss` (from hidden
  states and LM heads), exact and memory-light.
- :mod:`.cross_entropy` — ``ce_and_gather``: CE and gathered logits from one logsumexp
  (analytic gradient), shared by the SFT and sparse paths.
- :mod:`.sparse` — :func:`sparse_kd_loss` against top-k teacher targets with a tail bucket,
  :func:`topk_teacher`/:func:`teacher_tail` (the targets), :func:`retemper`.
- :mod:`.vocab` — :func:`shared_vocab_logits` (the tokenizer check: ``models.check_same_tokenizer``).
"""

from spectrumkd.losses.chunked import (
    chunked_kd_loss,
    default_chunk_size,
    default_fused_chunk_size,
    fused_kd_loss,
)
from spectrumkd.losses.dense import kd_loss
from spectrumkd.losses.divergences import (
    DIVERGENCES,
    divergence,
    divergence_and_grad,
    divergence_from_log_probs,
    forward_kl,
    jensen_shannon,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from spectrumkd.losses.objective import KDObjective, preset
from spectrumkd.losses.reduction import KDLoss
from spectrumkd.losses.sparse import TAILS, retemper, sparse_kd_loss, teacher_tail, topk_teacher
from spectrumkd.losses.vocab import shared_vocab_logits

__all__ = [
    "DIVERGENCES",
    "KDLoss",
    "KDObjective",
    "TAILS",
    "chunked_kd_loss",
    "default_chunk_size",
    "default_fused_chunk_size",
    "divergence",
    "divergence_and_grad",
    "divergence_from_log_probs",
    "forward_kl",
    "fused_kd_loss",
    "jensen_shannon",
    "kd_loss",
    "preset",
    "retemper",
    "reverse_kl",
    "shared_vocab_logits",
    "skew_forward_kl",
    "skew_reverse_kl",
    "sparse_kd_loss",
    "teacher_tail",
    "topk_teacher",
    "total_variation",
]
