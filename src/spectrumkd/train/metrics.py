"""``metrics.jsonl`` (docs/design.md §7), an optional TensorBoard mirror and the tqdm progress bar.

One JSON object per line, flushed as it is written so a crashed run keeps its history:

- step lines ``{"kind": "step", "step", "epoch", "loss", "ce", "kd", "temperature", "lr",
  "tokens", "tokens_per_s", "on_policy"}`` (``ce``/``kd`` are the unweighted parts of the loss);
- epoch lines ``{"kind": "epoch", "epoch", "subset_size", "temperature", "steps",
  "epoch_loss", "epoch_time_s", "val_loss", "val_rougeL", ...}`` (validation numbers only when
  validation runs);
- curve lines ``{"kind": "curve", "step", "epoch", "heldout_ce", "entropy", "heldout_kl", "rows",
  "tokens"}`` at the held-out curve's points, step 0 included (``heldout_kl`` only with the
  teacher's log-probs; :func:`spectrumkd.train.validation.heldout_curve`).

Only the main process writes. A resumed run appends to the same file. This module does not
compute anything; :mod:`spectrumkd.report.rundir` reads the file back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "progress_bar"]


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors/numpy to Python numbers, NaN/inf to None (JSON has neither)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Append step and epoch lines to ``path``; mirror numbers to TensorBoard when asked.

    >>> import tempfile, pathlib, json
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with MetricsWriter(p) as m:
    ...     _ = m.step(step=1, epoch=1, loss=2.5, temperature=1.0)
    ...     _ = m.epoch(epoch=1, subset_size=8, temperature=1.0)
    >>> [json.loads(x)["kind"] for x in p.read_text().splitlines()]
    ['step', 'epoch']
    """

    def __init__(self, path: str | Path | None, *, tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._fh = None
        self._tb = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard_dir))

    def _write(self, kind: str, fields: dict[str, Any], tb_step: int | None) -> dict:
        row = {"kind": kind, **{k: _clean(v) for k, v in fields.items()}}
        if self._fh is not None:
            self._fh.write(json.dumps(row) + "\n")
            self._fh.flush()
        if self._tb is not None and tb_step is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{kind}/{k}", v, tb_step)
        return row

    def step(self, **fields: Any) -> dict:
        """One optimizer step's numbers (``step`` is the global optimizer step, 1-based)."""
        return self._write("step", fields, fields.get("step"))

    def epoch(self, **fields: Any) -> dict:
        """One epoch's summary; carries ``epoch``, ``subset_size`` and ``temperature``."""
        for key in ("epoch", "subset_size", "temperature"):
            if key not in fields:
                raise TypeError(f"an epoch line needs {key!r}")
        return self._write("epoch", fields, fields.get("epoch"))

    def curve(self, **fields: Any) -> dict:
        """One point of the held-out curve; carries ``step`` (0 = before training)."""
        if "step" not in fields:
            raise TypeError("a curve line needs 'step'")
        return self._write("curve", fields, fields["step"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, *, initial: int = 0, disable: bool = False):
    """A tqdm bar over optimizer steps (ETA from the plan's total steps)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=disable, unit="step", dynamic_ncols=True,
                desc="distill")
