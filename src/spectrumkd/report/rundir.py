"""Read what a report needs from a run directory (docs/design.md §7) into plain data.

The paths come from :class:`spectrumkd.rundir.RunDir`, the one owner of the layout.

Each file is optional on its own — a scoring-only run has ``scores.jsonl`` but no metrics, an
evaluation-only folder has ``eval/results.json`` — but a directory with none of them is an error
that names the directory and the files looked for. Files that are present but malformed raise
:class:`~spectrumkd.SpectrumKDError` naming the file and line; nothing is guessed or filled in.

This module does not draw anything (see :mod:`spectrumkd.report.figures`) and does not compute
statistics (see :mod:`spectrumkd.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectrumkd import SpectrumKDError
from spectrumkd.configfile import read_mapping
from spectrumkd.curriculum import Plan, ScoresFile, read_scores
from spectrumkd.fileio import read_json
from spectrumkd.jsonl import iter_jsonl
from spectrumkd.rundir import RESULTS_FILE, RunDir, find_results

#: The run-directory files a report reads, relative to the run directory.
_LAYOUT = RunDir("")
RUN_FILES: tuple[str, ...] = (
    *(str(p) for p in (_LAYOUT.config, _LAYOUT.scores, _LAYOUT.plan, _LAYOUT.metrics_file,
                       _LAYOUT.results)),
    RESULTS_FILE,  # an eval output folder (find_results)
)

#: Fields that only an end-of-epoch line of ``metrics.jsonl`` carries.
EPOCH_ONLY_KEYS: frozenset[str] = frozenset(
    {"subset_size", "val_loss", "val_rougeL", "epoch_time_s", "epoch_loss"}
)


@dataclass
class RunData:
    """Everything a report uses from one run directory; ``None``/empty where a file is absent."""

    path: Path
    name: str
    config: dict[str, Any] | None = None
    scores: ScoresFile | None = None
    plan: Plan | None = None
    step_metrics: list[dict[str, Any]] = field(default_factory=list)
    epoch_metrics: list[dict[str, Any]] = field(default_factory=list)
    curve_metrics: list[dict[str, Any]] = field(default_factory=list)
    """The held-out curve's lines of ``metrics.jsonl`` (``kind: curve``), in file order."""
    results: dict[str, Any] | None = None

    @property
    def has_training(self) -> bool:
        return bool(self.step_metrics or self.epoch_metrics)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``metrics.jsonl`` into (step lines, epoch lines), each in file order.

    A line is an epoch line when its ``kind`` field says ``"epoch"`` or, without ``kind``, when it
    carries a field that only epoch summaries have (``subset_size``, ``val_loss``, ``val_rougeL``…);
    every other line is a step line. Blank lines are skipped; anything that is not a JSON object
    raises an error naming the file and line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> _ = p.write_text('{"step": 1, "epoch": 1, "ce": 2.0}\\n{"epoch": 1, "subset_size": 8}\\n')
    >>> steps, epochs = read_metrics(p)
    >>> len(steps), epochs[0]["subset_size"]
    (1, 8)
    """
    steps: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    for _, row in iter_jsonl(path):
        kind = row.get("kind")
        if kind == "epoch" or (kind is None and EPOCH_ONLY_KEYS & row.keys()):
            epochs.append(row)
        elif kind in (None, "step"):
            steps.append(row)
        # Other kinds (the held-out "curve": read_curve) are not step or epoch lines.
    return steps, epochs


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The held-out curve's lines of ``metrics.jsonl`` (``kind: curve``: ``step``, ``heldout_ce``,
    ``heldout_kl``, ``entropy``), in file order."""
    return [row for _, row in iter_jsonl(path) if row.get("kind") == "curve"]


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_mapping(path, what="config")


def load_run(path: str | Path, *, name: str | None = None) -> RunData:
    """Load one run directory; ``name`` defaults to the directory's name.

    Raises :class:`~spectrumkd.SpectrumKDError` when ``path`` is not a directory or holds none of
    :data:`RUN_FILES`.
    """
    root = Path(path)
    if not root.is_dir():
        raise SpectrumKDError(f"{root}: not a run directory (it does not exist or is a file)")
    present = [rel for rel in RUN_FILES if (root / rel).is_file()]
    if not present:
        raise SpectrumKDError(
            f"{root}: nothing to report — none of {', '.join(RUN_FILES)} is in this directory"
        )
    rd = RunDir(root)
    run = RunData(path=root, name=name or root.resolve().name)
    if rd.config.is_file():
        run.config = _read_yaml(rd.config)
    if rd.scores.is_file():
        run.scores = read_scores(rd.scores)
    if rd.plan.is_file():
        run.plan = Plan.load(rd.plan)
    if rd.metrics_file.is_file():
        run.step_metrics, run.epoch_metrics = read_metrics(rd.metrics_file)
        run.curve_metrics = read_curve(rd.metrics_file)
    results = find_results(root, missing_ok=True)
    if results is not None:
        run.results = read_json(results, what="results file")
    return run


def unique_names(paths: list[Path]) -> list[str]:
    """Short, distinct run names: the directory name, prefixed by parents where two collide.

    >>> unique_names([Path("a/spectrumkd"), Path("b/spectrumkd"), Path("b/full")])
    ['a/spectrumkd', 'b/spectrumkd', 'full']
    """
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    parts = [p.parts for p in distinct]
    depth = [1] * len(distinct)
    while True:
        names = ["/".join(pt[-d:]) for pt, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            break
        for i, n in enumerate(names):
            if n in clashes:
                depth[i] += 1  # distinct paths differ somewhere, so this ends
    name_of = dict(zip(distinct, names))
    out = [name_of[p] for p in resolved]
    # The very same directory given twice: number the repeats.
    return [f"{n} ({i + 1})" if resolved.count(p) > 1 else n
            for i, (n, p) in enumerate(zip(out, resolved))]  # fmt: skip


def load_runs(paths: list[str | Path]) -> list[RunData]:
    """Load several run directories, naming each so that the names are distinct."""
    if not paths:
        raise SpectrumKDError("no run directory given")
    names = unique_names([Path(p) for p in paths])
    return [load_run(p, name=n) for p, n in zip(paths, names)]
