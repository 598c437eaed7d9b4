"""Worker for test_fsdp.py: a tiny student trained with torch FSDP2 (``fully_shard``) on gloo.

Usage: ``torchrun --nproc_per_node N tests/train/fsdp_worker.py OUT.json [--save DIR --stop-after S |
--resume DIR]``, or plain ``python`` (one process, no sharding). The teacher is replicated (every
process holds a full copy, no gradient); the student's decoder layers and root are ``fully_shard``
units. Each optimizer step sees the same global batch of 4 examples split over the processes; the
KD loss (spectrumkd's chunked ``kd_loss``, fkl, τ = 2, ce_weight 0.3) divides by the *global*
response-token count, and the per-process loss is scaled by the world size because FSDP averages
gradients over processes, so every process count gives the same gradient.

Why not through ``spectrumkd.train.loop.train``: accelerate 1.15 selects ``DistributedType.FSDP``
only on accelerator devices (``AcceleratorState``: the FSDP branch is inside the GPU/XPU/... device
types); on CPU an ``accelerate launch`` with an FSDP config silently becomes ``MULTI_CPU`` (DDP).
torch's own FSDP2 does run on CPU with gloo, so this worker drives it directly with the library's
loss, data and collator: what FSDP changes (sharded parameters, all-gathers, reduce-scatters, the
sharded optimizer state) is exercised, and save/resume goes through the library's own
checkpoints (``spectrumkd.train.checkpoint``), which gather a sharded student to whole tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import STUDENT, TEACHER, records
from spectrumkd.data import Collator, build_examples
from spectrumkd.losses import kd_loss
from spectrumkd.models import load_model, tiny_tokenizer
from spectrumkd.rundir import RunDir
from spectrumkd.train.checkpoint import TrainState, load_checkpoint, save_checkpoint

GLOBAL_BATCH, STEPS = 4, 4


def _dist():
    import torch.distributed as dist

    if "RANK" not in os.environ:
        return None, 0, 1
    dist.init_process_group("gloo")
    return dist, dist.get_rank(), dist.get_world_size()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--save")
    p.add_argument("--stop-after", type=int, default=STEPS)
    p.add_argument("--resume")
    args = p.parse_args()
    dist, rank, world = _dist()
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    examples, _ = build_examples(records(16), tok, max_length=128)
    collate = Collator(tok.pad_token_id)
    student, teacher = load_model(STUDENT).train(), load_model(TEACHER).eval()
    if dist is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in student.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(student, mesh=mesh)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    start = 0
    if args.resume:
        start = load(Path(args.resume), student, opt, sched, rank)
    losses = []
    for step in range(start, min(STEPS, args.stop_after)):
        batch_ex = [examples[(step * GLOBAL_BATCH + i) % len(examples)] for i in range(GLOBAL_BATCH)]
        mine = batch_ex[rank::world]  # this process's share of the global batch
        b = collate(mine)
        labels = torch.nn.functional.pad(b["labels"][:, 1:], (0, 1), value=-100)
        n_global = sum(sum(1 for x in ex.labels[1:] if x != -100) for ex in batch_ex)
        s_logits = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        with torch.no_grad():
            t_logits = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        out = kd_loss(s_logits, t_logits, labels, divergence="fkl", temperature=2.0,
                      ce_weight=0.3, num_tokens=n_global, chunk_size=8)  # fmt: skip
        (out.total * world).backward()  # FSDP averages gradients over processes
        opt.step()
        sched.step()
        opt.zero_grad()
        total = out.total.detach().clone()
        if dist is not None:
            dist.all_reduce(total)  # the global loss: sum of the per-process parts
        losses.append(float(total))
    if args.save:
        save(Path(args.save), student, opt, sched, rank, min(STEPS, args.stop_after))
    if rank == 0:
        Path(args.out).write_text(json.dumps({"losses": losses, "world": world, "start": start}))
    if dist is not None:
        _shut_down(dist)


def _shut_down(dist) -> None:
    """End a gloo run without the exit-time abort that CI once hit on rank 1.

    ``terminate called without an active exception`` (SIGABRT) came from a gloo worker thread
    still being torn down while the interpreter finalised (pytorch/pytorch#179291 describes the
    same race). So: every rank waits for the others, the group is destroyed while Python is fully
    alive, and the process leaves with ``os._exit`` after flushing, skipping finalisation. The
    results are already on disk; nothing after this point could change them.
    """
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def save(folder: Path, model, opt, sched, rank: int, step: int) -> None:
    """The library's checkpoint (:func:`spectrumkd.train.checkpoint.save_checkpoint`) into the
    run directory ``folder``: a sharded student is gathered to whole tensors, written by rank 0."""
    state = TrainState(global_step=step, step_in_epoch=step, generation=1)
    save_checkpoint(folder, model=model, optimizer=opt, scheduler=sched, state=state,
                    export=False, rank=rank, is_main=rank == 0)  # fmt: skip


def load(folder: Path, model, opt, sched, rank: int) -> int:
    found = RunDir(folder).latest_checkpoint()
    assert found is not None, f"no checkpoint in {folder}"
    state = load_checkpoint(found, model=model, optimizer=opt, scheduler=sched, rank=0,
                            restore_rng=False)  # fmt: skip
    return state.global_step


if __name__ == "__main__":
    main()
