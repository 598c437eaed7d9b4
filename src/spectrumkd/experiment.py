"""``spectrumkd experiment``: named arms × training seeds, equal step budgets, paired significance.

An experiment config has two sections: ``run`` is an ordinary ``spectrumkd distill`` config (the
teacher and student are filled in here), ``experiment`` holds :class:`ExperimentConfig`: the
student to build (:mod:`spectrumkd.train.student`, cached), the arms (each a set of dotted
overrides of ``run``: any curriculum kind, direction, step, λ, τ ...), the training seeds, the
baseline arm and the evaluation protocol. For every seed and arm it runs an ordinary ``distill``
run directory under ``OUT/runs/{arm}/seed{seed}/`` and evaluates its ``best`` checkpoint (or, with
``experiment.eval.checkpoint=last``, its last one, into ``eval-last/`` and ``results-last.*``:
checkpoint selection on a small validation set is noisy, and the last checkpoint is the one at
exactly equal steps) with the MiniLLM protocol (sampling at T = 1 over several generation seeds, ROUGE-L) into its ``eval/``;
the student before training and the teacher are evaluated once under ``OUT/references/``.

Equal budgets by construction (the paper's 20:25 rule, §4): a SpectrumKD epoch trains on the
window M = N − ⌊λa·N⌋ − ⌊λb·N⌋ (0.8·N at the defaults), so an arm without a window (curriculum
``none``/``full``) gets ``round(0.8 × epochs)`` epochs unless its overrides set
``curriculum.epochs``. The planned optimizer steps of every arm (from its plan) and the steps it
really took (from its metrics) are recorded, and a mismatch above 2% is reported.

Every evaluation also writes the metric panel (:mod:`spectrumkd.evaluate.panel`: held-out CE,
KL(teacher‖model) and entropy teacher-forced on the first ``experiment.eval.panel_rows`` reference
answers, the teacher's NLL of the sampled answers, sampled and greedy ROUGE-L), with the run's
teacher; ``results.json`` holds it as ``arms.<arm>.panel`` (means over training seeds, per seed in
``panel_per_seed``) and ``references.<before|teacher>.panel``.

Runs as records (:mod:`spectrumkd.evaluate.study`): each finished arm × seed and each reference
writes a small record under ``OUT/records/`` (config hash, commit, steps, held-out curves, panel,
per-prompt scores; no weights). A unit with a record is finished; the others are run (or resumed
from their checkpoint: a run directory that finished training is kept), so a study continues on
any machine that has its records. Records copied in from elsewhere count when their config hash
(:func:`unit_hashes`) matches and are refused with one line naming the file when not.
``shard=(I, N)`` (``spectrumkd experiment --shard I/N``) runs only every N-th unit of the fixed
grid (:func:`grid`) from I; copy the shards' ``records/`` folders into one ``OUT`` and rerun
without ``--shard`` (or with ``run=False``, ``--no-run``) to rebuild the tables (docs/scaling.md).

Results, rebuilt from the records alone after every unit (``OUT/results.json``, ``results.md``,
``per_prompt.jsonl``, ``study.json``, ``figures/``): per arm, the mean ± std over training seeds
of the run's ROUGE-L (mean over prompts and generation seeds) and the relative gain over the
baseline arm; ``comparisons``: per arm vs the baseline and per panel metric (final value, and the
area under each held-out curve) over paired training seeds, the mean difference, a 95% bootstrap
CI and the exact two-sided Wilcoxon signed-rank p (:func:`spectrumkd.evaluate.stats.paired_seeds`:
a curriculum is a data order, so the training seed is the unit of evidence). Secondary, labelled
so: the Wilcoxon p over prompts (each prompt's score averaged over all seeds), and over pooled
(training seed, generation seed, prompt) pairs, which treats correlated pairs as independent.
Only library functions are called, never the CLI.

Control arms (issue 18) are curriculum kinds or overrides like any arm (:mod:`spectrumkd.curriculum.
baselines`): ``{curriculum.kind: random-window}``, ``{curriculum.kind: curated-shuffle}``, τ-only
``{curriculum.kind: full}`` (linear τ 1 → 2, at the paper's 0.8 × epochs), reverse
``{curriculum.direction: reverse}`` and no-exclusion ``{curriculum.lambda_b: 0.0}``; see
configs/experiments/controls.yaml.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from spectrumkd import SpectrumKDError, configfile
from spectrumkd.evaluate.results import BETTER, PANEL_METRICS
from spectrumkd.evaluate.study import (
    RECORD_VERSION,
    Unit,
    build_study,
    comparisons,
    config_hash,
    curves_from_metrics,
    per_prompt_tests,
    read_record,
    record_scores,
    shard_units,
    write_record,
)
from spectrumkd.rundir import RunDir, find_results

__all__ = ["ExperimentConfig", "EvalSection", "grid", "load_experiment", "read_records",
           "render_comparisons", "render_panel", "render_samples", "run_experiment", "summarize",
           "unit_hashes"]

PAPER_EPOCH_RATIO = 0.8  # §4: 20 epochs of full data vs 25 of SpectrumKD at λa = λb = 0.1
NO_WINDOW_KINDS = ("none", "full")
REFERENCES = ("before", "teacher")
CHECKPOINTS = ("best", "last")


@dataclass
class EvalSection:
    """How each run is evaluated (the MiniLLM protocol: sampling at T = 1, ROUGE-L)."""

    data: str = "spectrumkd:dolly/eval.jsonl"
    limit: int | None = 100
    seeds: list[int] = field(default_factory=lambda: [10, 20, 30])
    max_new_tokens: int | None = 64
    batch_size: int = 16
    checkpoint: str = "best"
    """Which checkpoint of each run is evaluated: ``best`` (by validation) or ``last``. ``last``
    results go to ``eval-last/`` and ``results-last.*`` beside the ``best`` ones."""
    panel_rows: int | None = None
    """Rows of the metric panel's teacher-forced and sample measures: the first ones of the
    evaluated prompts (unset: all of them, i.e. ``limit``)."""

    @property
    def suffix(self) -> str:
        """``""`` for the best checkpoint, ``"-last"`` for the last: eval folder and result names."""
        return "" if self.checkpoint == "best" else f"-{self.checkpoint}"

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINTS:
            raise SpectrumKDError(f"experiment.eval.checkpoint must be one of {CHECKPOINTS}, "
                                  f"got {self.checkpoint!r}")
        if not self.seeds:
            raise SpectrumKDError("experiment.eval.seeds must not be empty")
        if self.limit is not None and self.limit < 1:
            raise SpectrumKDError(f"experiment.eval.limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise SpectrumKDError(f"experiment.eval.batch_size must be >= 1, got {self.batch_size}")
        if self.panel_rows is not None and self.panel_rows < 1:
            raise SpectrumKDError(f"experiment.eval.panel_rows must be >= 1, got {self.panel_rows}")


@dataclass
class ExperimentConfig:
    """The ``experiment`` section of an experiment config."""

    arms: dict[str, dict] = field(default_factory=lambda: {
        "full": {"curriculum.kind": "none", "curriculum.temperature_schedule": "constant"},
        "spectrumkd": {},
    })
    """Arm name → dotted overrides of ``run`` (``{}``: the ``run`` section as it is)."""
    baseline: str = "full"
    """The arm every other arm is compared against."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds; every arm runs once per seed (unless ``arm_seeds`` names its own)."""
    arm_seeds: dict[str, list[int]] = field(default_factory=dict)
    """Arm → its own training seeds, e.g. fewer for control arms than for the two main arms."""
    student: dict | None = field(default_factory=dict)
    """``StudentConfig`` fields of the student to build (cached); null: use ``run.student``."""
    references: list[str] = field(default_factory=lambda: list(REFERENCES))
    """Models evaluated once beside the arms: ``before`` (the student untrained), ``teacher``."""
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        if isinstance(self.eval, dict):
            self.eval = configfile.build(EvalSection, self.eval, where="experiment.eval")
        if not self.arms:
            raise SpectrumKDError("experiment.arms must name at least one arm")
        for name, overrides in self.arms.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise SpectrumKDError(f"experiment.arms: bad arm name {name!r}")
            if not isinstance(overrides, dict):
                raise SpectrumKDError(f"experiment.arms.{name}: expected a mapping of dotted keys")
        if self.baseline not in self.arms:
            raise SpectrumKDError(f"experiment.baseline {self.baseline!r} is not an arm; "
                                  f"arms: {sorted(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SpectrumKDError(f"experiment.seeds must be distinct and non-empty, got {self.seeds}")
        for name, seeds in self.arm_seeds.items():
            if name not in self.arms:
                raise SpectrumKDError(f"experiment.arm_seeds: {name!r} is not an arm; arms: {sorted(self.arms)}")
            if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)):
                raise SpectrumKDError(f"experiment.arm_seeds.{name} must be distinct integers >= 0, got {seeds}")
        from spectrumkd.curriculum import MAX_SEED

        every_seed = [*self.seeds, *(x for seeds in self.arm_seeds.values() for x in seeds)]
        bad_seeds = [x for x in every_seed if isinstance(x, int) and not 0 <= x <= MAX_SEED]
        if bad_seeds:  # distill refuses them too, but only after the earlier runs
            raise SpectrumKDError(f"experiment.seeds: {bad_seeds} outside [0, {MAX_SEED}]")
        bad = sorted(set(self.references) - set(REFERENCES))
        if bad:
            raise SpectrumKDError(f"experiment.references: unknown {bad}; use {list(REFERENCES)}")


    def seeds_of(self, arm: str) -> list[int]:
        """The training seeds of ``arm``.

        >>> ExperimentConfig(seeds=[0, 1, 2], arm_seeds={"full": [0, 1]}).seeds_of("full")
        [0, 1]
        """
        return list(self.arm_seeds.get(arm, self.seeds))

    def all_seeds(self) -> list[int]:
        """Every training seed of any arm: ``seeds``, then the other seeds of ``arm_seeds``."""
        extra = [s for seeds in self.arm_seeds.values() for s in seeds]
        return list(dict.fromkeys([*self.seeds, *extra]))


def load_experiment(path: str | Path, overrides: list[str] | None = None):
    """``(ExperimentConfig, base RunConfig, {arm: RunConfig})`` from a YAML file, fully validated.

    ``overrides`` are dotted: ``experiment.seeds=[0]``, ``experiment.eval.limit=10`` or
    ``run.curriculum.epochs=3``. Every arm's run config and the student to build are checked
    here, before any model is loaded. Both sections go through :mod:`spectrumkd.configfile`, the
    engine of the run config.
    """
    from spectrumkd.train.config import apply_overrides, config_from_dict, resolve_data_paths

    path = Path(path)
    raw = configfile.read_mapping(path)
    if set(raw) - {"experiment", "run"}:
        raise SpectrumKDError(f"{path}: expected top-level keys experiment and run, "
                              f"got {sorted(map(str, raw))}")  # fmt: skip
    items: dict[str, list[str]] = {"experiment": [], "run": []}
    for item in overrides or []:
        head, dot, rest = item.partition(".")
        if not dot or head not in items or "=" not in rest:
            raise SpectrumKDError(f"override {item!r}: expected experiment.KEY=VALUE or run.KEY=VALUE")
        items[head].append(rest)
    exp_raw = configfile.apply_overrides(ExperimentConfig, raw.get("experiment") or {},
                                         items["experiment"], prefix="experiment.")  # fmt: skip
    exp = configfile.build(ExperimentConfig, exp_raw, where=f"{path}: experiment")
    base_dict = apply_overrides(raw.get("run") or {}, items["run"], prefix="run.")
    base = resolve_data_paths(config_from_dict(base_dict, where=f"{path}: run"), path)
    arms = {name: resolve_data_paths(_arm_config(base_dict, exp, name, where=str(path)), path)
            for name in exp.arms}  # fmt: skip
    student_config(exp, base)  # checked now; built (or read from the cache) by run_experiment
    return exp, base, arms


def student_config(exp: ExperimentConfig, base):
    """The :class:`~spectrumkd.train.student.StudentConfig` of ``experiment.student`` (its teacher
    is ``run.teacher``), or None when the experiment uses ``run.student`` as it is."""
    if exp.student is None:
        return None
    from spectrumkd.train.student import StudentConfig

    return configfile.build(StudentConfig, {"teacher": base.teacher.spec, **exp.student},
                            where="experiment.student")  # fmt: skip


def _arm_config(base_dict: dict, exp: ExperimentConfig, name: str, *, where: str):
    from spectrumkd.train.config import apply_overrides, config_from_dict

    overrides = exp.arms[name]
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    cfg = config_from_dict(apply_overrides(base_dict, items), where=f"{where}: arm {name}")
    if cfg.curriculum.kind in NO_WINDOW_KINDS and "curriculum.epochs" not in overrides:
        cfg.curriculum.epochs = max(1, round(PAPER_EPOCH_RATIO * cfg.curriculum.epochs))
    return cfg


# ----------------------------------------------------------------------------- running


def _log(message: str) -> None:
    print(f"experiment: {message}", flush=True)


def _eval_done(eval_dir: Path, n_seeds: int) -> bool:
    """Whether ``eval_dir`` holds a finished evaluation: every seed and the panel with the teacher."""
    from spectrumkd.evaluate.results import read_results

    path = find_results(eval_dir, missing_ok=True)
    if path is None:
        return False
    entry = read_results(path).get("sets", {}).get("dolly")
    return (entry is not None and len(entry.get("per_seed", {})) == n_seeds
            and set(PANEL_METRICS) <= set(entry.get("panel") or {}))


def _evaluate(model_dir: Path, eval_dir: Path, exp: ExperimentConfig,
              teacher: tuple[str, str | None]) -> None:
    """Evaluate ``model_dir`` (MiniLLM protocol and the metric panel against ``teacher``, a
    ``(spec, gguf_file)``) into ``eval_dir`` unless that is done."""
    from spectrumkd.evaluate.pipeline import EvalOptions, evaluate

    if _eval_done(eval_dir, len(exp.eval.seeds)):
        return
    e = exp.eval
    evaluate(EvalOptions(out=eval_dir, model=str(model_dir), suite="instruct", sets="dolly",
                         data=e.data, limit=e.limit, seeds=list(e.seeds),
                         max_new_tokens=e.max_new_tokens, batch_size=e.batch_size,
                         teacher=teacher[0], teacher_gguf_file=teacher[1], panel_rows=e.panel_rows))


def _planned_steps(cfg, run_dir: Path) -> int | None:
    from spectrumkd.curriculum import Plan
    from spectrumkd.train.loop import plan_steps, step_size

    plan_path = RunDir(run_dir).plan
    if not plan_path.is_file():
        return None
    return sum(plan_steps(Plan.load(plan_path), step_size(cfg, 1)))


def _real_steps(run_dir: Path) -> int | None:
    """Optimizer steps the run really took (its newest checkpoint's count)."""
    state = RunDir(run_dir).checkpoint_state()
    return int(state["global_step"]) if state is not None else None


def _checkpoint_model(run_dir: Path, which: str) -> Path:
    rd = RunDir(run_dir)
    if which == "best":
        folder = rd.best_model_dir
    else:
        latest = rd.latest_checkpoint()
        folder = latest / "model" if latest is not None else None
    if folder is None or not folder.is_dir():
        raise SpectrumKDError(f"{run_dir}: no {which} checkpoint model to evaluate")
    return folder


def _eval_dir(run_dir: Path, exp: ExperimentConfig) -> Path:
    return run_dir / f"eval{exp.eval.suffix}"


def _share_scores(src: Path | None, run_dir: Path) -> None:
    """Reuse the first run's scores (same student, same data) instead of scoring again."""
    if src is None or (run_dir / "scores.jsonl").exists() or not (src / "scores.jsonl").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "scores.jsonl", run_dir / "scores.jsonl")


def _order(exp: ExperimentConfig, arms: dict) -> list[str]:
    """Arms without a window first: the grid's fixed order within a training seed."""
    names = list(exp.arms)
    return sorted(names, key=lambda n: (arms[n].curriculum.kind not in NO_WINDOW_KINDS,
                                        names.index(n)))


def grid(exp: ExperimentConfig, arms: dict) -> list[Unit]:
    """Every unit of the experiment in its fixed order: per training seed the arms (those without
    a window first), then the reference models. ``--shard I/N`` takes every N-th from I."""
    units = [Unit("arm", name, seed) for seed in exp.all_seeds() for name in _order(exp, arms)
             if seed in exp.seeds_of(name)]
    return units + [Unit("reference", ref) for ref in exp.references]


# Run-config fields that say where or how verbosely a run works, not what it computes.
_LOCAL_FIELDS = ("output_dir", "progress")


def _portable(cfg, config_dir: Path) -> dict:
    """The run config as a machine-independent dict: data paths relative to the config file's
    folder, local fields and the teacher cache's folder dropped."""
    d = asdict(cfg)
    for key in _LOCAL_FIELDS:
        d.pop(key, None)
    d.get("teacher_cache", {}).pop("dir", None)
    for attr in ("source", "validation_source"):
        path = d["data"].get(attr)
        if path and Path(path).is_absolute():
            d["data"][attr] = os.path.relpath(path, config_dir)
    return d


def unit_hashes(exp: ExperimentConfig, base, arms: dict, config_path: str | Path) -> dict[Unit, str]:
    """The config hash of every unit (:func:`spectrumkd.evaluate.study.config_hash`): an arm's
    run config at its seed, the student built for the experiment and the evaluation protocol; a
    reference's model sections and the protocol. Seeds, other arms and the baseline choice are
    not part of it, so adding seeds or arms keeps the records made so far."""
    config_dir = Path(config_path).resolve().parent
    common = {"student_build": exp.student, "eval": asdict(exp.eval)}
    out = {}
    for unit in grid(exp, arms):
        if unit.unit == "arm":
            run = _portable(arms[unit.name], config_dir)
            run["seed"] = unit.seed
            out[unit] = config_hash({"arm": run, **common})
        else:
            models = _portable(base, config_dir)
            out[unit] = config_hash({"reference": unit.name, "teacher": models["teacher"],
                                     "student": models["student"], **common})
    return out


def _commit() -> str | None:
    """The git commit of the spectrumkd source that ran (``-dirty`` with uncommitted changes to
    tracked files), or None outside a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _per_prompt(scores: dict[tuple[int, str], float]) -> list[dict]:
    return [{"gen_seed": g, "id": pid, "rougeL": s} for (g, pid), s in sorted(scores.items())]


def _arm_record(unit: Unit, cfg, run_dir: Path, exp: ExperimentConfig, chash: str,
                commit: str | None) -> dict:
    from spectrumkd.curriculum import Plan

    eval_dir = _eval_dir(run_dir, exp)
    return {"spectrumkd": "record", "version": RECORD_VERSION, "unit": "arm", "arm": unit.name,
            "seed": unit.seed, "checkpoint": exp.eval.checkpoint, "config_hash": chash,
            "commit": commit, "kind": cfg.curriculum.kind, "epochs": cfg.curriculum.epochs,
            "steps": _real_steps(run_dir), "planned_steps": _planned_steps(cfg, run_dir),
            "n_train": Plan.load(RunDir(run_dir).plan).n_total,
            "curves": curves_from_metrics(RunDir(run_dir).metrics()),
            "panel": _panel(eval_dir) or {}, "per_prompt": _per_prompt(_scores(eval_dir) or {})}


def _reference_record(unit: Unit, eval_dir: Path, exp: ExperimentConfig, chash: str,
                      commit: str | None) -> dict:
    return {"spectrumkd": "record", "version": RECORD_VERSION, "unit": "reference",
            "reference": unit.name, "checkpoint": exp.eval.checkpoint, "config_hash": chash,
            "commit": commit, "panel": _panel(eval_dir) or {},
            "per_prompt": _per_prompt(_scores(eval_dir) or {})}


def read_records(out: str | Path, exp: ExperimentConfig, hashes: dict[Unit, str]) -> dict[Unit, dict]:
    """The records of the grid's units present in ``out`` (copied in from anywhere); any whose
    config hash differs from ``hashes`` is refused (:func:`spectrumkd.evaluate.study.read_record`)."""
    found = {}
    for unit, chash in hashes.items():
        path = unit.record_path(out, exp.eval.suffix)
        if path.is_file():
            found[unit] = read_record(path, unit, chash)
    return found


def run_experiment(config_path: str | Path, out_dir: str | Path,
                   overrides: list[str] | None = None, *, shard: tuple[int, int] | None = None,
                   run: bool = True) -> dict:
    """Run (or continue) the experiment of ``config_path`` into ``out_dir``; returns results.json.

    Units with a record are kept; the others (only this ``shard``'s share, ``(I, N)``, when given)
    are trained, evaluated and recorded. ``run=False`` trains nothing and only rebuilds the
    tables from the records present. The tables are rebuilt from records alone after every unit.
    """
    t0 = time.perf_counter()
    exp, base, arms = load_experiment(config_path, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"experiment{exp.eval.suffix}.yaml").write_text(
        yaml.safe_dump({"experiment": asdict(exp), "run_base": asdict(base),
                        "arms": {n: asdict(c) for n, c in arms.items()}}, sort_keys=False),
        encoding="utf-8")
    hashes = unit_hashes(exp, base, arms, config_path)
    records = read_records(out, exp, hashes)  # a record of another config stops here, before work
    units = grid(exp, arms)
    mine = units if shard is None else shard_units(units, *shard)
    for unit in mine:
        if unit in records:
            _log(f"{unit.label}: finished run, kept ({unit.record_path(out, exp.eval.suffix)})")
    pending = [u for u in mine if u not in records] if run else []
    if pending:
        _run_units(pending, out, exp, base, arms, hashes)
    results = summarize(out, exp, hashes)
    results["seconds_this_call"] = round(time.perf_counter() - t0, 1)
    write_results(out, exp, results, hashes)
    _log(f"finished in {(time.perf_counter() - t0) / 60:.1f} min; "
         f"{out / f'results{exp.eval.suffix}.md'}")
    return results


def _run_units(pending: list[Unit], out: Path, exp: ExperimentConfig, base, arms: dict,
               hashes: dict[Unit, str]) -> None:
    """Train (or resume), evaluate and record each pending unit, rebuilding the tables after each."""
    from spectrumkd.train.config import save_config
    from spectrumkd.train.pipeline import distill, resolve_spec
    from spectrumkd.train.student import build_student

    teacher_dir, teacher_gguf = resolve_spec(base.teacher)
    student_cfg = student_config(exp, base)
    if student_cfg is not None:
        student_dir = str(build_student(student_cfg))
    else:
        student_dir = resolve_spec(base.student)[0]
    _log(f"teacher {teacher_dir}; student {student_dir}")
    commit = _commit()

    # Arms without a window share one teacher cache (every example, the same batches whichever
    # run writes it); windowed arms keep their own, of their plan's examples. A unit's numbers
    # then never depend on which unit ran first here, so shards reproduce the unsharded study.
    shared_cache = out / "teacher_cache"
    first_run: Path | None = None
    for unit in pending:
        path = unit.record_path(out, exp.eval.suffix)
        if unit.unit == "reference":
            model_dir = Path(student_dir) if unit.name == "before" else Path(teacher_dir)
            if teacher_gguf is not None and unit.name == "teacher":
                raise SpectrumKDError("experiment: evaluate a GGUF teacher through its cached folder")
            _log(f"reference {unit.name}: evaluating {model_dir}")
            eval_dir = out / "references" / unit.name / "eval"
            _evaluate(model_dir, eval_dir, exp, (teacher_dir, teacher_gguf))
            write_record(path, _reference_record(unit, eval_dir, exp, hashes[unit], commit))
        else:
            name, seed = unit.name, unit.seed
            cfg = copy.deepcopy(arms[name])
            cfg.teacher.spec, cfg.teacher.gguf_file, cfg.teacher.prune_layers = teacher_dir, teacher_gguf, None
            cfg.student.spec, cfg.student.gguf_file, cfg.student.prune_layers = student_dir, None, None
            cfg.seed = seed
            run_dir = out / "runs" / name / f"seed{seed}"
            cfg.output_dir = str(run_dir)
            if (cfg.teacher_cache.enabled and cfg.teacher_cache.dir is None
                    and cfg.curriculum.kind in NO_WINDOW_KINDS):
                cfg.teacher_cache.dir = str(shared_cache)
            if RunDir(run_dir).is_finished(cfg.curriculum.epochs):  # its newest committed generation
                with RunDir(run_dir).lock():  # a kill after the last commit left the links behind
                    RunDir(run_dir).repair_links()
                _log(f"{name} seed {seed}: finished run, kept")
            else:
                _share_scores(first_run, run_dir)
                resume = RunDir(run_dir).config.is_file()  # started before: continue it
                _log(f"{name} seed {seed}: {'resuming' if resume else 'training'} "
                     f"({cfg.curriculum.kind}, {cfg.curriculum.epochs} epochs) → {run_dir}")
                distill(cfg, resume=resume)
            first_run = first_run or run_dir
            _evaluate(_checkpoint_model(run_dir, exp.eval.checkpoint), _eval_dir(run_dir, exp), exp,
                      (teacher_dir, teacher_gguf))
            save_config(cfg, run_dir / "arm.yaml")
            write_record(path, _arm_record(unit, cfg, run_dir, exp, hashes[unit], commit))
        _log(f"{unit.label}: recorded → {path}")
        write_results(out, exp, summarize(out, exp, hashes), hashes)


# ----------------------------------------------------------------------------- results


def _scores(eval_dir: Path) -> dict[tuple[int, str], float] | None:
    """``{(generation seed, prompt id): ROUGE-L}`` of a finished evaluation, or None."""
    from spectrumkd.evaluate.results import read_results, read_rows_only

    path = find_results(eval_dir, missing_ok=True)
    if path is None:
        return None
    entry = read_results(path).get("sets", {}).get("dolly")
    if entry is None:
        return None
    scores = {}
    for rel in entry["files"]:
        seed = int(Path(rel).stem.removeprefix("seed"))
        for row in read_rows_only(eval_dir / rel):
            scores[(seed, str(row["id"]))] = float(row["score"])
    return scores


def _panel(eval_dir: Path) -> dict | None:
    """The metric panel of a finished evaluation (its :data:`PANEL_METRICS`), or None."""
    from spectrumkd.evaluate.results import read_results

    path = find_results(eval_dir, missing_ok=True)
    if path is None:
        return None
    panel = (read_results(path).get("sets", {}).get("dolly") or {}).get("panel")
    return {k: panel[k] for k in PANEL_METRICS if k in panel} if panel else None


def _panel_means(per_seed: dict[str, dict]) -> dict:
    """Each panel metric's mean over the training seeds that have it."""
    out = {}
    for key in PANEL_METRICS:
        values = [p[key] for p in per_seed.values() if key in p]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _run_mean(scores: dict) -> float:
    return sum(scores.values()) / len(scores)


def collect_records(out: str | Path, exp: ExperimentConfig, hashes: dict[Unit, str]
                    ) -> tuple[dict[str, dict[int, dict]], dict[str, dict]]:
    """``({arm: {seed: record}}, {reference: record})`` of the records in ``out``."""
    found = read_records(out, exp, hashes)
    by_arm: dict[str, dict[int, dict]] = {name: {} for name in exp.arms}
    refs = {}
    for unit, rec in found.items():
        if unit.unit == "arm":
            by_arm[unit.name][unit.seed] = rec
        else:
            refs[unit.name] = rec
    return {name: dict(sorted(recs.items())) for name, recs in by_arm.items()}, refs


def summarize(out: str | Path, exp: ExperimentConfig, hashes: dict[Unit, str]) -> dict:
    """results.json from the records in ``out`` alone (arms with no record are listed empty)."""
    from spectrumkd.evaluate.stats import mean_std, relative_gain

    by_arm, ref_records = collect_records(out, exp, hashes)
    per_run = {name: {s: record_scores(r) for s, r in recs.items()} for name, recs in by_arm.items()}
    base_runs = per_run[exp.baseline]
    base_mean = mean_std([_run_mean(s) for s in base_runs.values()])[0] if base_runs else None
    table = {}
    for name, runs in per_run.items():
        recs = by_arm[name]
        cfg = exp.arms[name]
        row: dict = {"n_seeds": len(runs), "seeds": sorted(runs),
                     "kind": next((r["kind"] for r in recs.values()), cfg.get("curriculum.kind")),
                     "epochs": next((r["epochs"] for r in recs.values()), None),
                     "steps": next((r["steps"] for r in recs.values()), None),
                     "steps_per_seed": [r["steps"] for r in recs.values()],
                     "planned_steps_per_seed": [r["planned_steps"] for r in recs.values()]}
        if runs:
            means = [_run_mean(runs[s]) for s in sorted(runs)]
            row["rougeL_mean"], row["rougeL_std"] = mean_std(means)
            row["rougeL_per_seed"] = dict(zip(map(str, sorted(runs)), means))
            row["gain_vs_baseline_pct"] = (relative_gain(row["rougeL_mean"], base_mean)
                                           if base_mean is not None else None)
        else:
            row.update(rougeL_mean=None, rougeL_std=None, rougeL_per_seed={},
                       gain_vs_baseline_pct=None)
        if name == exp.baseline:
            row.update(p_vs_baseline=None, p_prompts_vs_baseline=None, n_pairs=0)
        else:
            tests = per_prompt_tests(runs, base_runs)
            row.update(p_vs_baseline=tests["p_pairs"], p_prompts_vs_baseline=tests["p_prompts"],
                       n_pairs=tests["n_pairs"], n_prompts=tests["n_prompts"])
        row["panel_per_seed"] = {str(s): r["panel"] for s, r in recs.items() if r["panel"]}
        row["panel"] = _panel_means(row["panel_per_seed"])
        table[name] = row
    refs = {}
    for ref in exp.references:
        rec = ref_records.get(ref)
        scores = record_scores(rec) if rec else {}
        refs[ref] = {"rougeL_mean": _run_mean(scores) if scores else None,
                     "panel": dict(rec["panel"]) if rec else {}}
    mismatched = sorted({n for n, r in table.items() if _steps_differ(r, table[exp.baseline])})
    return {"spectrumkd": "experiment", "baseline": exp.baseline, "arms": table,
            "references": refs, "eval": asdict(exp.eval), "train_seeds": exp.seeds,
            "arm_seeds": {name: exp.seeds_of(name) for name in exp.arms},
            "checkpoint": exp.eval.checkpoint,
            "step_budget_mismatch": mismatched,
            "comparisons": comparisons(by_arm, exp.baseline),
            "test": "comparisons: per metric over paired training seeds (mean difference, 95% "
                    "bootstrap CI, exact two-sided Wilcoxon signed-rank p); secondary: "
                    "p_prompts_vs_baseline, Wilcoxon over prompts each averaged over all seeds; "
                    "p_vs_baseline over (train seed, generation seed, prompt) pairs, which treats "
                    "correlated pairs as independent"}


def _seeds_text(results: dict) -> str:
    """``[0, 1, 2]``, or per arm when ``arm_seeds`` gives some arms other seeds."""
    per_arm = results.get("arm_seeds") or {}
    if all(seeds == results["train_seeds"] for seeds in per_arm.values()):
        return str(results["train_seeds"])
    return "; ".join(f"{name} {seeds}" for name, seeds in per_arm.items())


def _steps_differ(row: dict, base: dict) -> bool:
    a, b = row.get("steps"), base.get("steps")
    return a is not None and b is not None and abs(a - b) > 0.02 * max(a, b)


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def render_markdown(results: dict) -> str:
    """The results table (arms: ROUGE-L mean ± std over seeds, gain, the per-prompt p as a
    secondary column; the reference models), then :func:`render_comparisons`."""
    lines = ["| model | ROUGE-L (mean ± std over training seeds) | seeds | steps | gain vs "
             f"{results['baseline']} | p (pairs) | p (per prompt, secondary) |",
             "|---|---|---|---|---|---|---|"]
    refs = results.get("references", {})
    if "before" in refs:
        lines.append(f"| student before training | {_fmt(refs['before']['rougeL_mean'])} | | | | | |")
    for name, r in results["arms"].items():
        gain = r.get("gain_vs_baseline_pct")
        gain_s = "" if name == results["baseline"] else (f"{gain:+.1f}%" if gain is not None else "—")
        p = "" if name == results["baseline"] else _fmt(r.get("p_vs_baseline"), 3)
        pp = "" if name == results["baseline"] else _fmt(r.get("p_prompts_vs_baseline"), 3)
        mean = ("—" if not r["n_seeds"] else _fmt(r["rougeL_mean"]) if r["n_seeds"] == 1
                else f"{_fmt(r['rougeL_mean'])} ± {_fmt(r['rougeL_std'])}")  # one seed has no spread
        lines.append(f"| {name} | {mean} | {r['n_seeds']} | {r['steps'] or '—'} | {gain_s} | {p} | {pp} |")
    if "teacher" in refs:
        lines.append(f"| teacher | {_fmt(refs['teacher']['rougeL_mean'])} | | | | | |")
    e = results["eval"]
    lines += ["", f"ROUGE-L of each run's {results.get('checkpoint', 'best')} checkpoint on "
              f"{e['data']} (first {e['limit']} prompts, generation seeds "
              f"{e['seeds']}, sampling at T = 1, at most {e['max_new_tokens']} new tokens); "
              f"training seeds {_seeds_text(results)}. {results['test']}."]
    if results.get("step_budget_mismatch"):
        lines.append(f"Step budgets differ by more than 2% for: {results['step_budget_mismatch']}.")
    return "\n".join(lines) + "\n" + render_comparisons(results)


def render_comparisons(results: dict) -> str:
    """Each arm vs the baseline per metric over paired training seeds: n, mean difference
    (arm − baseline), 95% bootstrap CI, exact Wilcoxon p; ROUGE-L's per-prompt p as secondary."""
    rows = results.get("comparisons") or []
    if not rows:
        return ""
    lines = ["", f"Paired over training seeds, arm − {results['baseline']}:", "",
             "| arm | metric | seeds | mean difference | 95% CI (bootstrap over seeds) | "
             "p (exact Wilcoxon over seeds) | p (per prompt, secondary) |",
             "|---|---|---:|---:|---|---:|---:|"]
    for c in rows:
        digits = 2 if c["metric"].startswith("rouge") else 4
        ci = f"[{_fmt(c['ci95'][0], digits)}, {_fmt(c['ci95'][1], digits)}]"
        lines.append(f"| {c['arm']} | {c['metric']} | {c['n_seeds']} | "
                     f"{_fmt(c['mean_diff'], digits)} | {ci} | {_fmt(c['p'], 4)} | "
                     f"{_fmt(c.get('p_per_prompt_secondary'), 4) if 'p_per_prompt_secondary' in c else ''} |")
    lines += ["", "With n paired seeds the exact two-sided p cannot go below 2/2^n (0.25 at 3 seeds, "
              "0.0625 at 5, 0.031 at 6). `_auc`: the area under the held-out curve divided by its "
              "step span (the curve's mean height)."]
    return "\n".join(lines) + "\n"


PANEL_TITLES = {"heldout_ce": "held-out CE", "heldout_kl": "held-out KL(teacher‖model)",
                "entropy": "entropy", "sample_nll": "teacher NLL of samples",
                "rougeL": "ROUGE-L (sampled)", "rougeL_greedy": "ROUGE-L (greedy)"}
_ARROWS = {"lower": "↓", "higher": "↑", "teacher's": "≈ teacher"}


def render_panel(results: dict) -> str:
    """The metric panel table: the student before training, each arm (mean over training seeds),
    the teacher; a column per :data:`PANEL_METRICS` marked with the better direction."""
    head = [f"{PANEL_TITLES[k]} {_ARROWS[BETTER[k]]}" for k in PANEL_METRICS]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    refs = results.get("references", {})
    rows = []
    if "before" in refs:
        rows.append(("student before training", refs["before"].get("panel") or {}))
    rows += [(f"{name} ({r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''})", r.get("panel") or {})
             for name, r in results["arms"].items()]
    if "teacher" in refs:
        rows.append(("teacher", refs["teacher"].get("panel") or {}))
    for label, panel in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(panel.get(k), 2 if k.startswith("rouge") else 3)
                                                   for k in PANEL_METRICS) + " |")
    e = results["eval"]
    n = e.get("panel_rows") or e["limit"]
    lines += ["", f"CE, KL and entropy in nats/token, teacher-forced on the reference answers of the "
              f"first {n} prompts of {e['data']} (rows over 256 prompt / 512 total tokens left out); "
              "the teacher's NLL (nats/token) of each model's sampled answers (T = 1, top-k 0, top-p "
              f"1, at most {e['max_new_tokens']} new tokens, generation seeds {e['seeds']}); "
              "ROUGE-L 0–100 over all evaluated prompts. Arms: means over training seeds "
              "(per seed: `panel_per_seed` in results.json)."]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 400) -> str:
    """``text`` as one Markdown table cell: pipes escaped, line breaks as <br>, cut at ``limit``."""
    text = text if len(text) <= limit else text[:limit].rstrip() + " …"
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def render_samples(out: str | Path, exp: ExperimentConfig, *, prompts: int = 3) -> str:
    """Answers side by side for the first ``prompts`` evaluation prompts: the reference, the
    teacher, the student before training and each arm (its first training seed), all sampled
    with the first generation seed. Models not evaluated yet are left out."""
    from spectrumkd.evaluate.results import read_rows_only
    from spectrumkd.evaluate.sets import load_set

    out, e = Path(out), exp.eval
    gen_seed = e.seeds[0]
    columns = [(label, out / "references" / ref / "eval")
               for ref, label in (("teacher", "teacher"), ("before", "student before training"))
               if ref in exp.references]
    columns += [(f"{name} (seed {exp.seeds_of(name)[0]})",
                 _eval_dir(out / "runs" / name / f"seed{exp.seeds_of(name)[0]}", exp)) for name in exp.arms]
    answers = {}
    for label, eval_dir in columns:
        path = eval_dir / "generations" / "dolly" / f"seed{gen_seed}.jsonl"
        if path.is_file():
            answers[label] = {str(row["id"]): row["prediction"] for row in read_rows_only(path)}
    items = load_set("dolly", "instruct", data=e.data, limit=min(prompts, e.limit or prompts)).items
    lines = [f"Sampled answers (T = 1, top-k 0, generation seed {gen_seed}, at most "
             f"{e.max_new_tokens} new tokens) to the first {len(items)} prompts of {e.data}."]
    for number, item in enumerate(items, start=1):
        lines += ["", f"**{number}. {_cell(item.extra.get('question', item.prompt), 300)}**", "",
                  "| model | answer |", "|---|---|", f"| reference | {_cell(item.references[0])} |"]
        lines += [f"| {label} | {_cell(by_id[item.id])} |" for label, by_id in answers.items()
                  if item.id in by_id]
    return "\n".join(lines) + "\n"


def write_results(out: Path, exp: ExperimentConfig, results: dict, hashes: dict[Unit, str]) -> None:
    """From the records in ``out``: results.json (``results``), results.md, per_prompt.jsonl,
    study.json (:func:`spectrumkd.evaluate.study.build_study`) and the figure (with matplotlib)."""
    from spectrumkd.fileio import atomic_write_text

    suffix = exp.eval.suffix
    by_arm, refs = collect_records(out, exp, hashes)
    atomic_write_text(out / f"results{suffix}.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / f"results{suffix}.md",
                      render_panel(results) + "\n" + render_markdown(results))
    rows = [{"arm": name, "train_seed": seed, "gen_seed": r["gen_seed"], "id": r["id"],
             "rougeL": round(r["rougeL"], 4)}
            for name, recs in by_arm.items() for seed, rec in recs.items() for r in rec["per_prompt"]]
    atomic_write_text(out / f"per_prompt{suffix}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    study = build_study(by_arm, refs, baseline=results["baseline"], checkpoint=results["checkpoint"])
    atomic_write_text(out / f"study{suffix}.json", json.dumps(study, indent=1) + "\n")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # the plot extra: no figure without it
        return
    from spectrumkd.report.figures import results_figure

    (out / "figures").mkdir(exist_ok=True)
    results_figure(results).savefig(out / "figures" / f"results{suffix}.png", dpi=150)
