"""On-policy batches for GKD: replace each example's response by the student's own sample.

Agarwal et al. 2024 (GKD) mix on- and off-policy data: with probability λ per optimizer step
(:func:`use_student_samples`, seeded by ``(seed, step)`` so every process and a resumed run make
the same choice) the batch's responses are sampled from the student at T = 1 (no top-k/top-p) for
at most ``max_new_tokens`` tokens, up to and including its EOS, and the KD loss (generalised JSD
by default, ``ce_weight = 0`` as in the paper) is computed on those tokens. The prompt tokens keep
``labels = -100``. Sampling runs under ``torch.random.fork_rng`` seeded from
``(seed, step, rank, micro-batch)``, so it does not disturb the training RNG and resumes exactly.

Not here: the loss (``spectrumkd.losses``), text decoding (``spectrumkd.evaluate.generation``
returns strings; training needs token ids).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from spectrumkd.data import Example

__all__ = ["sample_responses", "use_student_samples"]


def use_student_samples(seed: int, step: int, probability: float) -> bool:
    """The per-step coin of GKD's mixture, identical on every process.

    >>> [use_student_samples(0, s, 0.5) for s in range(6)] == [use_student_samples(0, s, 0.5) for s in range(6)]
    True
    >>> use_student_samples(0, 3, 0.0), use_student_samples(0, 3, 1.0)
    (False, True)
    """
    return random.Random(f"gkd:{seed}:{step}").random() < probability


@torch.no_grad()
def sample_responses(
    model,
    examples: Sequence[Example],
    *,
    pad_token_id: int,
    eos_token_id: int | list[int],
    max_new_tokens: int,
    seed: int,
) -> list[Example]:
    """Examples whose response is a fresh student sample (T = 1) after the same prompt."""
    device = next(model.parameters()).device
    prompts = [ex.input_ids[: ex.num_prompt_tokens] for ex in examples]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):  # left padding so every prompt ends at the same column
        input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=True,
                temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                eos_token_id=eos, pad_token_id=pad_token_id, use_cache=True,
            )  # fmt: skip
    finally:
        model.train(was_training)
    new = out[:, width:].tolist()  # [B, <= max_new_tokens]
    result = []
    for ex, prompt, tokens in zip(examples, prompts, new):
        for pos, tok in enumerate(tokens):
            if tok in eos:
                tokens = tokens[: pos + 1]  # keep the EOS: ending is part of the policy
                break
        if not tokens:  # pragma: no cover - generate always returns >= 1 token
            tokens = [eos[0]]
        result.append(
            Example(
                id=ex.id, prompt=ex.prompt, response=None, references=ex.references,
                input_ids=list(prompt) + tokens, labels=[-100] * len(prompt) + tokens,
            )  # fmt: skip
        )
    return result
