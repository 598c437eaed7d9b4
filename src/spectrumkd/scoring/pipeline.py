"""The scoring pipeline behind ``spectrumkd score``: a model + data → scores file and dropped.jsonl.

``score(ScoreOptions(...))`` opens the model (:func:`spectrumkd.models.open_model`: package name,
hub id, folder or GGUF file, the GGUF dequantised once), builds the examples, and runs
:func:`~spectrumkd.scoring.runner.run_scoring` into ``out`` (the scores file of
docs/design.md §4) with ``dropped.jsonl`` beside it. Under ``torchrun`` / ``accelerate launch`` each
process scores its share of the batches and the main process writes one file. The main process
holds ``<out>.lock`` from its first write on, so a second ``score`` on the same ``out`` stops with
a one-line error instead of racing the first. Bad input (data, template, few-shot file) fails
before anything is written.

Not here: the argument parsing (:mod:`spectrumkd.commands.score`), the batching and metrics.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.rundir import RunDir

__all__ = ["ScoreOptions", "ScoreSummary", "score"]


@dataclass
class ScoreOptions:
    """What ``spectrumkd score`` scores and how (each field is one command-line option)."""

    model: str
    data: str
    out: str | Path
    gguf_file: str | None = None
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)
    template: str = "dolly"
    few_shot: str | None = None
    num_shots: int = 8
    metric: str = "ce"
    reduction: str = "mean"
    batch_tokens: int = 4096
    max_prompt_length: int = 256
    max_length: int = 512
    max_new_tokens: int = 256
    limit: int | None = None
    dtype: str | None = None
    device: str | None = None
    trust_remote_code: bool = False
    gguf_cache: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.few_shot and self.template != "math":
            raise SpectrumKDError("--few-shot goes with --template math")


@dataclass
class ScoreSummary:
    """What a scoring run did (the command prints it)."""

    out: Path
    dropped_file: Path
    scores: list[float]
    n_dropped: int
    load_seconds: float
    score_seconds: float

    def line(self, metric: str, reduction: str) -> str:
        s = self.scores
        return (f"scored {len(s)} examples ({self.n_dropped} dropped → {self.dropped_file}) with "
                f"{metric}/{reduction}: mean {sum(s) / len(s):.4f}, min {min(s):.4f}, "
                f"max {max(s):.4f}; model {self.load_seconds:.1f} s (any first-time GGUF conversion "
                f"included), scoring {self.score_seconds:.1f} s → {self.out}")


def _init_distributed() -> tuple[int, int, bool]:
    """Join the process group set up by torchrun / accelerate launch:
    ``(rank, local_rank, whether this call created the group)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 0, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
        created = True
    return torch.distributed.get_rank(), local_rank, created


def score(opts: ScoreOptions) -> ScoreSummary | None:
    """Score ``opts.data`` with ``opts.model`` into ``opts.out``; the summary on the main
    process, ``None`` on the others. An ``out`` (or the ``dropped.jsonl`` beside it) that is or
    lies inside an input is refused before anything is loaded or written."""
    from spectrumkd.fileio import refuse_overlap

    out = Path(opts.out)
    refuse_overlap({"--out": out, "dropped.jsonl beside --out": RunDir(out.parent).dropped},
                   {"--data": opts.data, "--few-shot": opts.few_shot})
    rank, local_rank, created = _init_distributed()
    try:
        return _score(opts, rank, local_rank)
    finally:
        if created:
            torch.distributed.destroy_process_group()


def _score(opts: ScoreOptions, rank: int, local_rank: int) -> ScoreSummary | None:
    from spectrumkd.data import build_examples, load_records, math_few_shot, write_dropped
    from spectrumkd.fileio import file_lock
    from spectrumkd.models import open_model
    from spectrumkd.scoring.runner import run_scoring

    device = opts.device
    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    opened = open_model(opts.model, gguf_file=opts.gguf_file, dtype=opts.dtype, device=device,
                        trust_remote_code=opts.trust_remote_code, gguf_cache=opts.gguf_cache)
    records = load_records(opts.data, split=opts.split, fields=dict(opts.fields), limit=opts.limit)
    few_shot = math_few_shot(load_records(opts.few_shot), opts.num_shots) if opts.few_shot else []
    examples, dropped = build_examples(
        records, opened.tokenizer, template=opts.template,
        max_prompt_length=opts.max_prompt_length, max_length=opts.max_length, few_shot=few_shot,
    )
    out = Path(opts.out)
    dropped_file = RunDir(out.parent).dropped  # beside the scores, as in a run directory
    # The lock comes just before the first write: bad input above fails without touching out.
    with file_lock(out, what=f"scores file {out}") if rank == 0 else nullcontext():
        if rank == 0:
            write_dropped(dropped_file, dropped)
        t1 = time.perf_counter()
        scores = run_scoring(
            opened.model, examples, out, model_name=opened.name,
            template=opts.template, max_length=opts.max_length,
            max_prompt_length=opts.max_prompt_length, metric=opts.metric,
            reduction=opts.reduction, batch_tokens=opts.batch_tokens, overwrite=opts.overwrite,
            tokenizer=opened.tokenizer, max_new_tokens=opts.max_new_tokens,
            progress=opts.progress,
        )
        t_score = time.perf_counter() - t1
    if rank != 0:
        return None
    return ScoreSummary(out=out, dropped_file=dropped_file, scores=scores, n_dropped=len(dropped),
                        load_seconds=opened.seconds, score_seconds=t_score)
