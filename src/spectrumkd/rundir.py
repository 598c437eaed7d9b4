"""The run directory (docs/design.md §7): its paths, its checkpoint generations, and who may write it.

:class:`RunDir` is the one owner of the layout::

    run/
      config.yaml  dropped.jsonl  scores.jsonl  plan.json  metrics.jsonl
      checkpoints/
        gen-000003/     a complete generation: COMMITTED is its last file
        gen-000004.tmp/ a generation being written (or cut short by a crash): never used
        last -> gen-000003   best -> gen-000002   (relative symlinks, replaced atomically)
      eval/results.json  report/  teacher_cache/  tensorboard/
      .spectrumkd.lock     only while a writer holds the run (:meth:`RunDir.lock`)

Checkpoints are written by generations (:func:`begin_generation`, :func:`commit_generation`):
files go into ``gen-N.tmp``, are fsynced, the ``COMMITTED`` marker is written last, the folder is
renamed to ``gen-N`` and the parent fsynced; only then do ``last``/``best`` move, and only then are
older generations removed. A kill at any point leaves the previous complete generation in place.
The truth is the newest complete generation (highest N with its marker): its ``train_state.json``
names the generation holding the best model, and :meth:`RunDir.repair_links` points the links
there, so ``best`` never names a folder that is gone or half written.

Standard library only: train, evaluate and report all use it without upward imports. The
tensors inside a generation are :mod:`spectrumkd.train.checkpoint`'s business.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectrumkd import SpectrumKDError
from spectrumkd.fileio import atomic_write_bytes, file_lock, fsync_dir, read_json
from spectrumkd.jsonl import iter_jsonl, parse_line

__all__ = ["COMMIT_MARKER", "RESULTS_FILE", "RunDir", "begin_generation", "commit_generation",
           "find_results"]

COMMIT_MARKER = "COMMITTED"
STATE_FILE = "train_state.json"
_GEN = re.compile(r"^gen-(\d{6,})$")
#: Files ``distill`` itself writes into a run directory (``--overwrite`` removes these only).
RUN_OUTPUTS = ("config.yaml", "dropped.jsonl", "metrics.jsonl", "checkpoints", "eval", "report",
               "tensorboard", "teacher_cache")
#: Inputs a user may put into a fresh run directory for ``distill`` to use (docs/design.md §7):
#: ``spectrumkd score --out DIR/scores.jsonl`` writes ``dropped.jsonl`` beside the scores (distill
#: writes its own over it), and ``spectrumkd plan --out DIR/plan.json`` the plan.
RUN_INPUTS = ("scores.jsonl", "dropped.jsonl", "plan.json")
LOCK_NAME = ".spectrumkd.lock"
#: What ``spectrumkd eval --out DIR`` writes as ``DIR/results.json``; a run keeps it in ``eval/``.
RESULTS_FILE = "results.json"


def find_results(path: str | os.PathLike, *, missing_ok: bool = False) -> Path | None:
    """The ``results.json`` of a run directory (in its ``eval/``), of an eval output folder, or
    the file itself: the one lookup of ``compare``, ``judge``, ``report`` and ``experiment``.

    Missing: a one-line error naming where it looked, or ``None`` with ``missing_ok``.

    >>> find_results("no/such/run", missing_ok=True) is None
    True
    """
    path = Path(path)
    for candidate in (path, path / RESULTS_FILE, RunDir(path).results):
        if candidate.is_file():
            return candidate
    if missing_ok:
        return None
    raise SpectrumKDError(f"{path}: not a `spectrumkd eval` output folder or run directory (no {RESULTS_FILE}"
                          f" in it or in eval/; `spectrumkd eval --out DIR` writes DIR/{RESULTS_FILE})")


def _stage_noop(name: str) -> None:
    """Default stage callback of the generation writers (kill tests pass their own)."""


class RunDir:
    """Paths and checkpoint queries of one run directory; creating it writes nothing.

    Public names the experiment runner and the report use: :attr:`config`, :attr:`scores`,
    :attr:`plan`, :attr:`metrics_file`, :attr:`checkpoints`, :attr:`results`,
    :meth:`has_checkpoint`, :meth:`latest_checkpoint`, :meth:`best_checkpoint`,
    :attr:`best_model_dir`, :meth:`is_finished`, :meth:`metrics`, :meth:`lock`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.dropped = self.path / "dropped.jsonl"
        self.scores = self.path / "scores.jsonl"
        self.plan = self.path / "plan.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.eval_dir = self.path / "eval"
        self.results = self.eval_dir / RESULTS_FILE
        self.report_dir = self.path / "report"
        self.teacher_cache = self.path / "teacher_cache"
        self.tensorboard = self.path / "tensorboard"
        self.lock_file = self.path / LOCK_NAME

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- what is there ------------------------------------------------------------------------
    def contents(self) -> list[str]:
        """Names in the directory (sorted), lock files and the temporary files a killed writer
        left (:func:`leftover_of`) left out; [] when it does not exist."""
        if not self.path.exists():
            return []
        if not self.path.is_dir():
            raise SpectrumKDError(f"{self.path}: exists and is not a directory")
        return sorted(p.name for p in self.path.iterdir()
                      if not p.name.endswith(".lock") and leftover_of(p.name) is None)

    def generations(self) -> list[Path]:
        """Complete generations (renamed and holding their marker), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for child in self.checkpoints.iterdir():
            m = _GEN.match(child.name)
            if m and not child.is_symlink() and (child / COMMIT_MARKER).is_file():
                found.append((int(m.group(1)), child))
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        """The newest complete generation, or None."""
        gens = self.generations()
        return gens[-1] if gens else None

    def has_checkpoint(self) -> bool:
        return self.latest_checkpoint() is not None

    def checkpoint_state(self, folder: Path | None = None) -> dict[str, Any] | None:
        """The ``TrainState`` fields (a dict) of ``folder`` or of the newest generation."""
        folder = folder if folder is not None else self.latest_checkpoint()
        if folder is None:
            return None
        return read_json(folder / STATE_FILE, what="checkpoint state")

    def best_checkpoint(self) -> Path | None:
        """The generation holding the best model, as the newest generation's state names it."""
        state = self.checkpoint_state()
        if state is None or state.get("best_generation") is None:
            return None
        folder = self.checkpoints / generation_name(int(state["best_generation"]))
        if not (folder / COMMIT_MARKER).is_file():  # pruning never removes it: a bug, say so
            raise SpectrumKDError(f"{folder}: the best checkpoint named by {self.latest_checkpoint()} "
                                  "is missing or incomplete")
        return folder

    @property
    def best_model_dir(self) -> Path | None:
        """``save_pretrained`` folder of the best model (``<generation>/model``), or None."""
        best = self.best_checkpoint()
        return best / "model" if best is not None and (best / "model").is_dir() else None

    def is_finished(self, epochs: int | None = None) -> bool:
        """Whether the newest checkpoint is the end of training (of ``epochs`` epochs if given)
        and a best model exists."""
        state = self.checkpoint_state()
        if state is None or not state.get("finished"):
            return False
        if epochs is not None and int(state.get("epoch", 0)) - 1 != epochs:
            return False
        return self.best_model_dir is not None

    def metrics(self) -> list[dict[str, Any]]:
        """Every row of ``metrics.jsonl`` in file order ([] when absent)."""
        if not self.metrics_file.is_file():
            return []
        return [row for _, row in iter_jsonl(self.metrics_file)]

    # -- writing -------------------------------------------------------------------------------
    def lock(self):
        """An exclusive lock on the run directory (a context manager; see ``file_lock``)."""
        return file_lock(self.lock_file, what=f"run directory {self.path}")

    def truncate_metrics(self, *, global_step: int, epoch: int) -> int:
        """Keep only the rows a checkpoint at ``global_step`` (in ``epoch``) had written: step rows
        up to that step and epoch rows of earlier epochs. A torn last line is dropped. Returns the
        rows removed; the file is replaced atomically."""
        path = self.metrics_file
        if not path.is_file():
            return 0
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            lines.pop()  # no newline: a write cut short by a kill
        kept: list[bytes] = []
        removed = 0
        for lineno, raw in enumerate(lines, start=1):
            row = parse_line(raw, path, lineno)
            if row is None:
                continue
            if row.get("kind") == "epoch":
                drop = int(row.get("epoch", 0)) >= epoch
            elif "step" in row:
                drop = int(row["step"]) > global_step
            else:
                drop = False
            if drop:
                removed += 1
            else:
                kept.append(raw)
        new = b"".join(line + b"\n" for line in kept)
        if new != data:
            atomic_write_bytes(path, new)
        return removed

    def repair_links(self, *, stage: Callable[[str], None] = _stage_noop) -> None:
        """Point ``last`` at the newest complete generation and ``best`` at the one its state
        names; then remove every other generation and any partial one. Main process only."""
        latest = self.latest_checkpoint()
        if latest is None:
            return
        state = self.checkpoint_state(latest) or {}
        best = state.get("best_generation")
        keep = {latest.name}
        point_link(self.checkpoints / "last", latest.name)
        stage("last-link")
        if best is not None:
            keep.add(generation_name(int(best)))
            point_link(self.checkpoints / "best", generation_name(int(best)))
        stage("best-link")
        prune(self.checkpoints, keep)
        stage("prune")

    def remove_outputs(self) -> list[str]:
        """Delete what ``distill`` wrote here (:data:`RUN_OUTPUTS`, and ``plan.json`` when distill
        made it); user inputs and unknown files stay. Returns the names removed."""
        removed = []
        leftovers = [p.name for p in self.path.iterdir() if leftover_of(p.name) is not None]
        for name in (*RUN_OUTPUTS, *leftovers):
            target = self.path / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            else:
                continue
            removed.append(name)
        if self.plan.is_file() and plan_made_by_distill(self.plan):
            self.plan.unlink()
            removed.append(self.plan.name)
        return removed


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$|^(?P<folder>.+)\.tmp(-[A-Za-z0-9_]+)?$")


def leftover_of(name: str) -> str | None:
    """The run file whose temporary copy ``name`` is (``.config.yaml.k3j_x9a2.tmp`` of an atomic
    write, ``teacher_cache.tmp-k3j_x9a2`` of the teacher cache), or None: such a file is what a
    killed writer leaves, and it never blocks a rerun or ``--resume``.

    >>> leftover_of(".config.yaml.k3j_x9a2.tmp"), leftover_of("teacher_cache.tmp-k3j_x9a2"), leftover_of("notes.tmp")
    ('config.yaml', 'teacher_cache', None)
    """
    m = _LEFTOVER.match(name)
    if m is None:
        return None
    target = m.group("name") or m.group("folder")
    return target if target in RUN_OUTPUTS or target in RUN_INPUTS else None


def plan_made_by_distill(path: Path) -> bool:
    """Whether ``plan.json`` was written by ``distill`` from its config (not supplied by a user)."""
    try:
        params = json.loads(path.read_text(encoding="utf-8")).get("params", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False
    return isinstance(params, dict) and params.get("made_by") == "distill"


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def point_link(link: Path, target_name: str) -> None:
    """Make ``link`` a relative symlink to ``target_name`` atomically (new link, rename over)."""
    if link.is_symlink() and os.readlink(link) == target_name:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target_name, tmp)
    if link.exists() and not link.is_symlink():  # a folder of the pre-generation layout
        shutil.rmtree(link)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def prune(checkpoints: Path, keep: set[str]) -> None:
    """Remove generations (complete or partial) not named in ``keep``."""
    for child in checkpoints.iterdir():
        name = child.name
        if child.is_symlink() or name in keep:
            continue
        if _GEN.match(name) or (name.startswith("gen-") and name.endswith(".tmp")):
            shutil.rmtree(child)


def begin_generation(checkpoints: Path, number: int, *, stage: Callable[[str], None] = _stage_noop) -> Path:
    """A fresh, empty ``gen-N.tmp`` to write generation ``number`` into (main process only).

    Leftovers of an earlier attempt at the same number are removed first.
    """
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / (generation_name(number) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    stage("begin")
    return tmp


def commit_generation(tmp: Path, *, stage: Callable[[str], None] = _stage_noop) -> Path:
    """Make ``tmp`` a complete generation: fsync every file, write the marker last, rename.

    Returns the final folder. A stale complete folder of the same number (only possible after
    resuming from an older generation by hand) is replaced.
    """
    for root, _, files in os.walk(tmp):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)
    stage("fsync")
    fd = os.open(tmp / COMMIT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"complete\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(tmp)
    stage("marker")
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    stage("rename")
    return final
