"""The curriculum in a plain PyTorch KD loop: ``PlanSampler`` + ``set_epoch`` + ``kd_loss``.

Written the way torchtune's ``recipes/knowledge_distillation_single_device.py`` reads: components
are plain blocks, the loop wires them, and ``sampler.set_epoch(epoch)`` is where you can see it.
Each epoch trains on the plan's subset at the plan's τ; the loss is the paper's
``ce_weight·CE + (1−ce_weight)·τ²·D`` over response tokens, divided by the token count of the whole
accumulation window.

Run it (tiny random models built in-process, packaged Dolly rows, seconds on a CPU)::

    python examples/plain_torch_loop.py

``tests/test_examples.py`` runs :func:`main` and checks the per-epoch ids and τ. Swap the
``tiny-random:`` specs for hub ids or folders to distil real models. Not here: checkpoints,
resume, several processes (``spectrumkd distill`` does those; ``PlanSampler`` is distributed-aware).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from spectrumkd.curriculum import make_plan
from spectrumkd.data import Collator, build_examples, load_records
from spectrumkd.losses import kd_loss
from spectrumkd.models import load_model, tiny_tokenizer
from spectrumkd.scoring.runner import score_examples
from spectrumkd.train.sampler import PlanSampler

STUDENT = "tiny-random:llama?layers=2&hidden=64&seed=1"
TEACHER = "tiny-random:llama?layers=2&hidden=64&seed=2"


def main(*, limit: int = 16, epochs: int = 4, batch_size: int = 4, accumulation: int = 2,
         seed: int = 0):
    """Distil for ``epochs``; return the plan and one ``{"epoch", "temperature", "ids", "loss"}``
    per epoch trained."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    records = load_records("spectrumkd:dolly/train.jsonl", limit=limit)
    examples, _dropped = build_examples(records, tokenizer, max_length=256)
    ids = [ex.id for ex in examples]
    student, teacher = load_model(STUDENT), load_model(TEACHER)

    # 1. difficulty = mean token CE of the untrained student; 2. the plan (τ 1 → 2)
    scores = score_examples(student, examples, progress=False)
    plan = make_plan("spectrumkd", ids, scores, epochs=epochs, warmup=1)

    # 3. the plan as a Sampler: set_epoch(e) selects plan epoch e + 1; with the lengths, each
    #    batch holds rows of similar length (far less padding, still exactly the plan's ids)
    sampler = PlanSampler(plan, dataset_ids=ids, seed=seed,
                          lengths=[len(ex.input_ids) for ex in examples], batch_size=batch_size)
    pad = Collator(tokenizer.pad_token_id)
    loader = DataLoader(examples, batch_size=batch_size, sampler=sampler,
                        collate_fn=lambda rows: {**pad(rows), "ids": [ex.id for ex in rows]})
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student.train()
    history = []
    for epoch in range(plan.num_epochs):
        sampler.set_epoch(epoch)
        tau = sampler.temperature
        seen, losses = [], []
        batches = list(loader)  # one accumulation window = `accumulation` consecutive batches
        for start in range(0, len(batches), accumulation):
            window = batches[start : start + accumulation]
            # the token count of the whole window, so the gradient ignores how it is split
            n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window)
            for batch in window:
                seen.extend(batch["ids"])
                logits = student(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).logits
                with torch.no_grad():
                    t_logits = teacher(input_ids=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]).logits
                out = kd_loss(logits[:, :-1], t_logits[:, :-1], batch["labels"][:, 1:],
                              divergence="fkl", temperature=tau, ce_weight=0.3,
                              num_tokens=n_tokens)
                out.total.backward()
                losses.append(float(out.total.detach()))
            optimizer.step()
            optimizer.zero_grad()
        history.append({"epoch": epoch + 1, "temperature": tau, "ids": seen,
                        "loss": sum(losses) / len(losses)})
        print(f"epoch {epoch + 1}: {len(seen)} examples at tau={tau:.3f}, loss {history[-1]['loss']:.4f}")
    return plan, history


if __name__ == "__main__":
    main()
