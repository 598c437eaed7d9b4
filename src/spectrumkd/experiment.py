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

Results (``OUT/results.json``, ``results.md``, ``per_prompt.jsonl``, ``figures/``): per arm, the
mean ± std over training seeds of the run's ROUGE-L (mean over prompts and generation seeds), the
relative gain over the baseline arm, and the two-sided Wilcoxon signed-rank p against the baseline
over paired (training seed, generation seed, prompt) scores — the pairing the issue asks for,
which treats correlated pairs as independent — plus the more conservative p over prompts (each
prompt's score averaged over all seeds). Everything resumes: a finished run (last epoch in its
metrics, eval complete) is skipped, an interrupted one resumes from its checkpoint, and results
are rewritten after every run, so a study can be continued later. Only library functions are
called, never the CLI.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from spectrumkd import SpectrumKDError, configfile
from spectrumkd.evaluate.results import BETTER, PANEL_METRICS
from spectrumkd.rundir import RunDir, find_results

__all__ = ["ExperimentConfig", "EvalSection", "load_experiment", "render_panel", "render_samples",
           "run_experiment", "summarize"]

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
    """Training seeds; every arm runs once per seed."""
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
        bad = sorted(set(self.references) - set(REFERENCES))
        if bad:
            raise SpectrumKDError(f"experiment.references: unknown {bad}; use {list(REFERENCES)}")


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
    """Arms without a window first (their teacher cache then holds every example)."""
    names = list(exp.arms)
    return sorted(names, key=lambda n: (arms[n].curriculum.kind not in NO_WINDOW_KINDS,
                                        names.index(n)))


def run_experiment(config_path: str | Path, out_dir: str | Path,
                   overrides: list[str] | None = None) -> dict:
    """Run (or continue) the experiment of ``config_path`` into ``out_dir``; returns results.json."""
    from spectrumkd.train.config import save_config
    from spectrumkd.train.pipeline import distill, resolve_spec
    from spectrumkd.train.student import build_student

    t0 = time.perf_counter()
    exp, base, arms = load_experiment(config_path, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"experiment{exp.eval.suffix}.yaml").write_text(
        yaml.safe_dump({"experiment": asdict(exp), "run_base": asdict(base),
                        "arms": {n: asdict(c) for n, c in arms.items()}}, sort_keys=False),
        encoding="utf-8")

    teacher_dir, teacher_gguf = resolve_spec(base.teacher)
    student_cfg = student_config(exp, base)
    if student_cfg is not None:
        student_dir = str(build_student(student_cfg))
    else:
        student_dir = resolve_spec(base.student)[0]
    _log(f"teacher {teacher_dir}; student {student_dir}")

    shared_cache = out / "teacher_cache"
    first_run: Path | None = None
    order = _order(exp, arms)
    use_shared_cache = arms[order[0]].curriculum.kind in NO_WINDOW_KINDS
    for seed in exp.seeds:
        for name in order:
            cfg = copy.deepcopy(arms[name])
            cfg.teacher.spec, cfg.teacher.gguf_file, cfg.teacher.prune_layers = teacher_dir, teacher_gguf, None
            cfg.student.spec, cfg.student.gguf_file, cfg.student.prune_layers = student_dir, None, None
            cfg.seed = seed
            run_dir = out / "runs" / name / f"seed{seed}"
            cfg.output_dir = str(run_dir)
            if cfg.teacher_cache.enabled and use_shared_cache and cfg.teacher_cache.dir is None:
                cfg.teacher_cache.dir = str(shared_cache)
            if RunDir(run_dir).is_finished(cfg.curriculum.epochs):
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
            per_run = collect_scores(out, exp)
            write_results(out, summarize(out, exp, arms, per_run), per_run)

    for ref in exp.references:
        model_dir = Path(student_dir) if ref == "before" else Path(teacher_dir)
        if teacher_gguf is not None and ref == "teacher":
            raise SpectrumKDError("experiment: evaluate a GGUF teacher through its cached folder")
        _log(f"reference {ref}: evaluating {model_dir}")
        _evaluate(model_dir, out / "references" / ref / "eval", exp, (teacher_dir, teacher_gguf))
    per_run = collect_scores(out, exp)
    results = summarize(out, exp, arms, per_run)
    results["seconds_this_call"] = round(time.perf_counter() - t0, 1)
    write_results(out, results, per_run)
    _log(f"finished in {(time.perf_counter() - t0) / 60:.1f} min; "
         f"{out / f'results{exp.eval.suffix}.md'}")
    return results


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


def collect_scores(out: str | Path, exp: ExperimentConfig) -> dict[str, dict[int, dict]]:
    """``{arm: {seed: {(generation seed, prompt id): ROUGE-L}}}`` of every finished evaluation."""
    out = Path(out)
    per_run: dict[str, dict[int, dict]] = {}
    for name in exp.arms:
        per_run[name] = {}
        for seed in exp.seeds:
            eval_dir = _eval_dir(out / "runs" / name / f"seed{seed}", exp)
            scores = _scores(eval_dir) if _eval_done(eval_dir, len(exp.eval.seeds)) else None
            if scores is not None:
                per_run[name][seed] = scores
    return per_run


def summarize(out: str | Path, exp: ExperimentConfig, arms: dict,
              per_run: dict[str, dict[int, dict]] | None = None) -> dict:
    """results.json of the runs finished so far (arms with no finished seed are listed empty);
    ``per_run`` is :func:`collect_scores`'s result, read here when not given."""
    from spectrumkd.evaluate.stats import mean_std, relative_gain, wilcoxon_p

    out = Path(out)
    per_run = collect_scores(out, exp) if per_run is None else per_run
    steps: dict[str, dict] = {}
    for name, runs in per_run.items():
        run_dirs = [out / "runs" / name / f"seed{seed}" for seed in runs]
        steps[name] = {"planned": [_planned_steps(arms[name], d) for d in run_dirs],
                       "real": [_real_steps(d) for d in run_dirs]}
    base_runs = per_run[exp.baseline]
    base_mean = mean_std([_run_mean(s) for s in base_runs.values()])[0] if base_runs else None
    table = {}
    for name, runs in per_run.items():
        row: dict = {"n_seeds": len(runs), "seeds": sorted(runs),
                     "kind": arms[name].curriculum.kind, "epochs": arms[name].curriculum.epochs,
                     "steps": steps[name]["real"][0] if steps[name]["real"] else None,
                     "steps_per_seed": steps[name]["real"],
                     "planned_steps_per_seed": steps[name]["planned"]}
        if runs:
            means = [_run_mean(runs[s]) for s in sorted(runs)]
            row["rougeL_mean"], row["rougeL_std"] = mean_std(means)
            row["rougeL_per_seed"] = dict(zip(map(str, sorted(runs)), means))
            row["gain_vs_baseline_pct"] = (relative_gain(row["rougeL_mean"], base_mean)
                                           if base_mean is not None else None)
        else:
            row.update(rougeL_mean=None, rougeL_std=None, rougeL_per_seed={},
                       gain_vs_baseline_pct=None)
        row.update(_paired(runs, base_runs, name == exp.baseline, wilcoxon_p))
        panels = {str(seed): _panel(_eval_dir(out / "runs" / name / f"seed{seed}", exp))
                  for seed in sorted(runs)}
        row["panel_per_seed"] = {seed: p for seed, p in panels.items() if p}
        row["panel"] = _panel_means(row["panel_per_seed"])
        table[name] = row
    refs = {}
    for ref in exp.references:
        scores = _scores(out / "references" / ref / "eval")
        refs[ref] = {"rougeL_mean": _run_mean(scores) if scores else None,
                     "panel": _panel(out / "references" / ref / "eval") or {}}
    mismatched = sorted({n for n, r in table.items() if _steps_differ(r, table[exp.baseline])})
    return {"spectrumkd": "experiment", "baseline": exp.baseline, "arms": table,
            "references": refs, "eval": asdict(exp.eval), "train_seeds": exp.seeds,
            "checkpoint": exp.eval.checkpoint,
            "step_budget_mismatch": mismatched,
            "test": "two-sided Wilcoxon signed-rank; p_vs_baseline over (train seed, generation "
                    "seed, prompt) pairs; p_prompts_vs_baseline over prompts, each averaged over "
                    "all seeds (conservative)"}


def _steps_differ(row: dict, base: dict) -> bool:
    a, b = row.get("steps"), base.get("steps")
    return a is not None and b is not None and abs(a - b) > 0.02 * max(a, b)


def _paired(runs: dict, base_runs: dict, is_baseline: bool, wilcoxon_p) -> dict:
    if is_baseline:
        return {"p_vs_baseline": None, "p_prompts_vs_baseline": None, "n_pairs": 0}
    common = sorted(set(runs) & set(base_runs))
    a, b = [], []
    by_prompt_a: dict[str, list] = {}
    by_prompt_b: dict[str, list] = {}
    for seed in common:
        keys = sorted(set(runs[seed]) & set(base_runs[seed]))
        if len(keys) != len(runs[seed]) or len(keys) != len(base_runs[seed]):
            raise SpectrumKDError(f"seed {seed}: the arm and the baseline were evaluated on "
                                  "different prompts or generation seeds")
        for key in keys:
            a.append(runs[seed][key])
            b.append(base_runs[seed][key])
            by_prompt_a.setdefault(key[1], []).append(runs[seed][key])
            by_prompt_b.setdefault(key[1], []).append(base_runs[seed][key])
    if not a:
        return {"p_vs_baseline": None, "p_prompts_vs_baseline": None, "n_pairs": 0}
    prompts = sorted(by_prompt_a)
    pa = [sum(by_prompt_a[k]) / len(by_prompt_a[k]) for k in prompts]
    pb = [sum(by_prompt_b[k]) / len(by_prompt_b[k]) for k in prompts]
    return {"p_vs_baseline": wilcoxon_p(a, b), "p_prompts_vs_baseline": wilcoxon_p(pa, pb),
            "n_pairs": len(a), "n_prompts": len(prompts)}


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def render_markdown(results: dict) -> str:
    """The results table: arms (mean ± std over seeds, gain, p) and the reference models."""
    lines = ["| model | ROUGE-L (mean ± std over training seeds) | seeds | steps | gain vs "
             f"{results['baseline']} | p (pairs) | p (prompts) |",
             "|---|---|---|---|---|---|---|"]
    refs = results.get("references", {})
    if "before" in refs:
        lines.append(f"| student before training | {_fmt(refs['before']['rougeL_mean'])} | | | | | |")
    for name, r in results["arms"].items():
        gain = r.get("gain_vs_baseline_pct")
        gain_s = "" if name == results["baseline"] else (f"{gain:+.1f}%" if gain is not None else "—")
        p = "" if name == results["baseline"] else _fmt(r.get("p_vs_baseline"), 3)
        pp = "" if name == results["baseline"] else _fmt(r.get("p_prompts_vs_baseline"), 3)
        mean = f"{_fmt(r['rougeL_mean'])} ± {_fmt(r['rougeL_std'])}" if r["n_seeds"] else "—"
        lines.append(f"| {name} | {mean} | {r['n_seeds']} | {r['steps'] or '—'} | {gain_s} | {p} | {pp} |")
    if "teacher" in refs:
        lines.append(f"| teacher | {_fmt(refs['teacher']['rougeL_mean'])} | | | | | |")
    e = results["eval"]
    lines += ["", f"ROUGE-L of each run's {results.get('checkpoint', 'best')} checkpoint on "
              f"{e['data']} (first {e['limit']} prompts, generation seeds "
              f"{e['seeds']}, sampling at T = 1, at most {e['max_new_tokens']} new tokens); "
              f"training seeds {results['train_seeds']}. {results['test']}."]
    if results.get("step_budget_mismatch"):
        lines.append(f"Step budgets differ by more than 2% for: {results['step_budget_mismatch']}.")
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
    columns += [(f"{name} (seed {exp.seeds[0]})", _eval_dir(out / "runs" / name / f"seed{exp.seeds[0]}", exp))
                for name in exp.arms]
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


def write_results(out: Path, results: dict, per_run: dict[str, dict[int, dict]]) -> None:
    """results.json, results.md, per_prompt.jsonl (from ``per_run``, :func:`collect_scores`) and
    the figure (when matplotlib is present)."""
    from spectrumkd.fileio import atomic_write_text

    suffix = "" if results["checkpoint"] == "best" else f"-{results['checkpoint']}"
    atomic_write_text(out / f"results{suffix}.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / f"results{suffix}.md",
                      render_panel(results) + "\n" + render_markdown(results))
    rows = []
    for name, runs in per_run.items():
        for seed in sorted(runs):
            for (gen_seed, pid), score in sorted(runs[seed].items()):
                rows.append({"arm": name, "train_seed": seed, "gen_seed": gen_seed, "id": pid,
                             "rougeL": round(score, 4)})
    atomic_write_text(out / f"per_prompt{suffix}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # the plot extra: no figure without it
        return
    from spectrumkd.report.figures import results_figure

    (out / "figures").mkdir(exist_ok=True)
    results_figure(results).savefig(out / "figures" / f"results{suffix}.png", dpi=150)
