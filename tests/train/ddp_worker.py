"""Worker for test_multiprocess.py: train tiny models under torchrun and dump the losses (rank 0).

Usage: ``torchrun --nproc_per_node N tests/train/ddp_worker.py OUT.json BATCH_SIZE``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import STUDENT, TEACHER, full_plan, make_cfg, records
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


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
