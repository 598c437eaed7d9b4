"""Worker for test_multiprocess.py: train tiny models under torchrun and dump what each run did.

Usage: ``torchrun --nproc_per_node N tests/train/ddp_worker.py OUT.json BATCH_SIZE [ids]``.
Without ``ids``: the global losses (rank 0). With ``ids``: each process writes ``OUT.json.rank<r>``,
the example ids that its forward passes saw, per plan epoch (a curriculum plan, grouped batches).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import STUDENT, TEACHER, full_plan, make_cfg, records, spectrum_plan
from spectrumkd.data import build_examples
from spectrumkd.models import load_model, tiny_tokenizer
from spectrumkd.train.loop import make_accelerator, train


def main(out: str, batch_size: int) -> None:
    tok = tiny_tokenizer()
    examples, _ = build_examples(records(16), tok, max_length=128)
    examples = examples[:9]  # 2 full steps of 4, then 1 example: rank 1 runs a zero-weight dummy
    cfg = make_cfg(optim={"batch_size": batch_size}, curriculum={"epochs": 2})
    result = train(cfg, student=load_model(STUDENT), tokenizer=tok, examples=examples,
                   plan=full_plan(examples, 2), teacher=load_model(TEACHER),
                   accelerator=make_accelerator(cfg))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result.losses))


def record_ids(out: str, batch_size: int) -> dict:
    """Train a spectrumkd plan (subsets of 10: no empty share at batch 2 × 2 processes) with grouped
    batches; return and write this process's ids per epoch, read from the student's inputs."""
    tok = tiny_tokenizer()
    examples, _ = build_examples(records(16), tok, max_length=128)
    by_tokens = {tuple(ex.input_ids): ex.id for ex in examples}
    cfg = make_cfg(optim={"batch_size": batch_size, "group_by_length": True},
                   curriculum={"kind": "spectrumkd", "epochs": 4})
    student = load_model(STUDENT)
    seen: list = []
    per_epoch: dict = defaultdict(list)

    def hook(module, args, kwargs):
        for row, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist()):
            seen.append(by_tokens[tuple(t for t, m in zip(row, mask) if m)])

    def on_step(row):
        per_epoch[row["epoch"]] += seen
        seen.clear()

    student.register_forward_pre_hook(hook, with_kwargs=True)
    accelerator = make_accelerator(cfg)
    train(cfg, student=student, tokenizer=tok, examples=examples, plan=spectrum_plan(examples),
          teacher=load_model(TEACHER), accelerator=accelerator, on_step=on_step)
    Path(f"{out}.rank{accelerator.process_index}").write_text(json.dumps(per_epoch))
    return dict(per_epoch)


if __name__ == "__main__":
    if sys.argv[3:] == ["ids"]:
        record_ids(sys.argv[1], int(sys.argv[2]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
