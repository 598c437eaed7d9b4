"""Build a student worth distilling from a teacher: prune by measured importance, then heal.

``build_student(StudentConfig(...), out)`` (``spectrumkd student``):

1. measures block importance on calibration text and keeps ``keep`` decoder layers
   (:func:`spectrumkd.models.importance.choose_layers`; default: the contiguous block with the
   smallest angular distance removed, two thirds of the layers kept);
2. heals the pruned copy with a short KD run through the ordinary loop
   (:func:`spectrumkd.train.loop.train`: teacher → student, one pass over ``heal_steps ×
   heal_batch_size`` rows), the recipe of NVIDIA's Minitron (prune, then distil to recover). By
   default 160 steps, each with probability ``heal_on_policy`` = 0.5 on the student's own samples
   scored by the teacher (GKD; the divergence alone) and otherwise on the healing rows
   (``ce_weight``·CE + (1−``ce_weight``)·D), D = reverse KL: the samples the student will be
   judged by are what it trains on. A progress bar and checkpoints: an interrupted build resumes
   (``<build>.work/``). Measured build times and what each setting gives:
   ``docs/results/issue17/README.md``;
3. measures the mean response CE (nats/token, the scoring metric) of the teacher, the pruned and
   the healed student on held-out calibration rows, and writes a normal Hugging Face folder with a
   student card ``student.json`` (kept layers, importance, CE, healing data and steps, the command
   that rebuilds it).

Calibration and healing text default to the packaged S-NI rows (``spectrumkd:sinst/calib.jsonl``,
64 rows; ``spectrumkd:sinst/heal.jsonl``, 1321 rows; see their NOTICE.md): instruction data in the
same template as the curriculum data, but disjoint from every Dolly row used for curriculum
training, validation and evaluation, so healing does not pre-train on the experiment's rows. A
student healed on S-NI must not be evaluated on S-NI.

Builds are cached under ``cache_dir()/students/``, keyed by the teacher's fingerprint and every
setting (``keep`` resolved to its number), so the demo and experiments pay for a build once.
Not here: the pruning mechanics (:mod:`spectrumkd.models.prune`).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

from spectrumkd import SpectrumKDError
from spectrumkd.rundir import RunDir

__all__ = ["StudentConfig", "build_student", "read_student_card", "CARD"]

CARD = "student.json"


@dataclass
class StudentConfig:
    """How to make a student from a teacher (``spectrumkd student`` options)."""

    teacher: str = "smollm2"
    """Teacher spec: smollm2, qwen2.5-coder-0.5b/-1.5b, a hub id, a folder or a .gguf file."""
    keep: int | None = None
    """Decoder layers to keep; unset: two thirds of the teacher's (rounded down; SmolLM2: 20 of 30)."""
    # The choices are spelled here so that ``--help`` needs no torch; tests/train/test_student.py
    # checks them against models.importance.METHODS and losses.objective.DIVERGENCES.
    method: str = field(default="angular", metadata={"choices": ("angular", "bi", "every")})
    """angular (Gromov et al. 2024), bi (ShortGPT Block Influence) or every (every k-th layer)."""
    every: int | None = None
    """The stride of method every; unset: ceil(layers / keep)."""
    refine: int = 4
    """angular: score this many closest blocks by calibration CE and keep the best (1: Gromov's rule)."""
    refine_rows: int = 16
    """Calibration rows of that CE (the first ones)."""
    calibration: str = "spectrumkd:sinst/calib.jsonl"
    """Rows for the importance measurement and the CE figures of the card."""
    calibration_rows: int = 64
    """How many calibration rows (the first ones) are read."""
    heal_data: str = "spectrumkd:sinst/heal.jsonl"
    """Rows of the healing KD run (disjoint from every packaged Dolly row)."""
    heal_steps: int = 160
    """Optimizer steps of healing; 0 skips healing."""
    heal_batch_size: int = 4
    """Rows per healing step."""
    heal_lr: float = 3e-4
    """Peak learning rate of healing (AdamW)."""
    heal_ce_weight: float = 0.3
    """Healing loss: ce_weight·CE + (1 − ce_weight)·divergence(teacher, student)."""
    heal_divergence: str = field(default="rkl", metadata={
        "choices": ("fkl", "rkl", "jsd", "tvd", "skl", "srkl")})
    """The divergence of the healing loss."""
    heal_on_policy: float = 0.5
    """Probability per healing step that the responses are the student's own samples (GKD's λ,
    at most 64 new tokens), trained on the divergence alone; 0: the healing data's responses only."""
    template: str = "dolly"
    """Prompt template of the calibration and healing rows."""
    max_prompt_length: int = 256
    """Drop calibration/healing rows with longer prompts (tokens)."""
    max_length: int = 512
    """Drop calibration/healing rows longer than this (prompt + response tokens)."""
    seed: int = 0
    """Seed of the healing run (its batch order; the pruning itself is deterministic)."""

    def __post_init__(self) -> None:
        from spectrumkd.models.importance import METHODS

        if self.method not in METHODS:
            raise SpectrumKDError(f"student: unknown method {self.method!r}; use one of {METHODS}")
        for name in ("calibration_rows", "heal_batch_size", "max_prompt_length", "max_length",
                     "refine", "refine_rows"):
            if getattr(self, name) < 1:
                raise SpectrumKDError(f"student: {name} must be >= 1, got {getattr(self, name)}")
        if self.keep is not None and self.keep < 1:
            raise SpectrumKDError(f"student: keep must be >= 1, got {self.keep}")
        if self.every is not None and self.every < 1:
            raise SpectrumKDError(f"student: every must be >= 1, got {self.every}")
        if self.heal_steps < 0:
            raise SpectrumKDError(f"student: heal_steps must be >= 0, got {self.heal_steps}")
        if not (self.heal_lr > 0 and self.heal_lr < 1):
            raise SpectrumKDError(f"student: heal_lr must be in (0, 1), got {self.heal_lr}")
        if not 0 <= self.heal_on_policy <= 1:
            raise SpectrumKDError(f"student: heal_on_policy must be in [0, 1], got {self.heal_on_policy}")
        if not 0 <= self.heal_ce_weight <= 1:
            raise SpectrumKDError(f"student: heal_ce_weight must be in [0, 1], got {self.heal_ce_weight}")

    def command(self) -> str:
        """The ``spectrumkd student`` command line that rebuilds this student."""
        parts = ["spectrumkd", "student"]
        defaults = StudentConfig()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "teacher" or value != getattr(defaults, f.name):
                parts += [f"--{f.name.replace('_', '-')}", str(value)]
        return shlex.join(parts) + " --out DIR"


def default_keep(n_layers: int) -> int:
    """Layers kept when ``keep`` is unset: two thirds, rounded down (issue 17: at half of
    SmolLM2's 30 the healed student's samples were word salad)."""
    return max(1, n_layers * 2 // 3)


def read_student_card(folder: str | Path) -> dict:
    """The ``student.json`` of a student folder (an error naming the file when it is unreadable)."""
    from spectrumkd.fileio import read_json

    path = Path(folder) / CARD
    if not path.is_file():
        raise SpectrumKDError(f"{path}: no student card (build it with `spectrumkd student`)")
    return read_json(path, what="student card")


def _log(message: str) -> None:
    print(f"student: {message}", flush=True)


def _examples(source: str, tokenizer, cfg: StudentConfig, limit: int | None):
    from spectrumkd.data import build_examples, load_records

    records = load_records(source, limit=limit)
    examples, _ = build_examples(records, tokenizer, template=cfg.template,
                                 max_prompt_length=cfg.max_prompt_length, max_length=cfg.max_length)
    return examples


def mean_ce(model, examples, *, progress: bool = False) -> float:
    """Mean over examples of each example's mean response CE (nats/token), the scoring metric."""
    from spectrumkd.scoring import score_examples

    scores = score_examples(model, examples, metric="ce", reduction="mean", progress=progress)
    return float(sum(scores) / len(scores))


def _calibration_batches(examples, pad_id: int, size: int = 8) -> list[dict]:
    from spectrumkd.data import Collator

    collate = Collator(pad_id)
    return [collate(examples[i : i + size]) for i in range(0, len(examples), size)]


HEAL_SAVES = 8
"""Healing saves a checkpoint this many times over its steps, so an interrupted build resumes."""


def _heal(cfg: StudentConfig, student, teacher, tokenizer, work: Path) -> dict:
    """Distil ``student`` from ``teacher`` in place for ``cfg.heal_steps`` steps; the healing record.

    A run directory ``work/heal`` holds checkpoints ``HEAL_SAVES`` times over the run, and a
    progress bar with ETA shows the steps; an interrupted build resumes from the last checkpoint.
    """
    import torch

    from spectrumkd.curriculum import make_plan
    from spectrumkd.train.config import config_from_dict
    from spectrumkd.train.loop import train

    rows = cfg.heal_steps * cfg.heal_batch_size
    examples = _examples(cfg.heal_data, tokenizer, cfg, None)[:rows]
    if len(examples) < rows:
        raise SpectrumKDError(
            f"student: healing needs {rows} rows ({cfg.heal_steps} steps × {cfg.heal_batch_size}); "
            f"{cfg.heal_data} has {len(examples)} that fit max_length={cfg.max_length}"
        )
    run = config_from_dict({
        "loss": {"mode": "gkd" if cfg.heal_on_policy > 0 else "kd", "divergence": cfg.heal_divergence,
                 "ce_weight": cfg.heal_ce_weight, "gkd_lambda": cfg.heal_on_policy},
        # Random (not length-grouped) batches: the order the measured default student was healed
        # with (docs/results/issue17), so a fresh build reproduces it.
        "optim": {"lr": cfg.heal_lr, "batch_size": cfg.heal_batch_size, "warmup_ratio": 0.1,
                  "schedule": "cosine", "group_by_length": False},
        "curriculum": {"kind": "none", "epochs": 1, "temperature_schedule": "constant"},
        "data": {"source": cfg.heal_data, "template": cfg.template},
        "teacher": {"spec": cfg.teacher}, "student": {"spec": "pruned teacher (in memory)"},
        "seed": cfg.seed, "progress": True,
        "save_every_steps": max(1, cfg.heal_steps // HEAL_SAVES),
    }, where="student healing")
    ids = [ex.id for ex in examples]
    plan = make_plan("full", ids, [0.0] * len(ids), epochs=1)
    torch.manual_seed(cfg.seed)
    run_dir = work / "heal"
    resume = RunDir(run_dir).has_checkpoint()
    if resume:
        _log(f"resuming the healing run in {run_dir}")
    result = train(run, student=student, tokenizer=tokenizer, examples=examples, plan=plan,
                   teacher=teacher, run_dir=run_dir, resume=resume)
    losses = [round(x, 4) for x in result.losses]
    return {"data": cfg.heal_data, "rows": [str(i) for i in ids[:3]] + ["..."], "n_rows": len(ids),
            "steps": result.state.global_step, "batch_size": cfg.heal_batch_size, "lr": cfg.heal_lr,
            "loss": f"{cfg.heal_ce_weight}·CE + {1 - cfg.heal_ce_weight:g}·{cfg.heal_divergence}",
            "on_policy": cfg.heal_on_policy,
            "first_losses": losses[:3], "last_losses": losses[-3:]}


def _cache_key(cfg: StudentConfig, teacher_fingerprint: str) -> str:
    payload = json.dumps({"teacher_fingerprint": teacher_fingerprint, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_student(cfg: StudentConfig, out: str | Path | None = None, *, overwrite: bool = False,
                  use_cache: bool = True) -> Path:
    """Build (or reuse from the cache) the student of ``cfg``; returns its folder.

    With ``out``, the folder is copied there; an existing non-empty ``out`` is refused unless
    ``overwrite``. Returns ``out`` or the cache folder.
    """
    from spectrumkd.models import cache_dir, model_fingerprint, open_model

    out = Path(out) if out is not None else None
    if out is not None:  # --overwrite replaces a student folder, never the teacher or the data
        from spectrumkd.fileio import refuse_overlap

        refuse_overlap({"--out": out}, {"--teacher": cfg.teacher, "--calibration": cfg.calibration,
                                        "--heal-data": cfg.heal_data})
    if out is not None and out.exists() and any(out.iterdir()) and not overwrite:
        raise SpectrumKDError(f"{out} exists and is not empty; pass --overwrite to replace it")
    t0 = time.perf_counter()
    opened = open_model(cfg.teacher, device="cpu")
    teacher, tokenizer, spec = opened.model, opened.tokenizer, opened.source
    fingerprint = model_fingerprint(teacher)
    if cfg.keep is None:  # the same student as the explicit number: one cache entry, one card
        n = teacher.config.num_hidden_layers
        every = cfg.method == "every" and cfg.every is not None
        cfg = replace(cfg, keep=len(range(0, n, cfg.every)) if every else default_keep(n))
    folder = cache_dir() / "students" / f"{Path(spec).name}-{_cache_key(cfg, fingerprint)}"
    if use_cache and (folder / CARD).is_file():
        problem = entry_problem(folder)
        if problem is None:
            _log(f"reusing the cached build {folder}")
            return _deliver(folder, out)
        _log(f"the cached build {folder} is not intact ({problem}); building it again")

    calib = _examples(cfg.calibration, tokenizer, cfg, cfg.calibration_rows)
    work = folder.with_name(folder.name + ".work")  # what an interrupted build keeps
    work.mkdir(parents=True, exist_ok=True)
    choice = _choose(cfg, teacher, tokenizer, calib, work)
    student, ce, healing = _prune_and_heal(cfg, teacher, tokenizer, calib, choice.kept, work)
    card = {
        "spectrumkd": "student",
        "teacher": cfg.teacher,
        "teacher_folder": spec,
        "teacher_fingerprint": fingerprint,
        "method": cfg.method,
        "num_layers": {"teacher": teacher.config.num_hidden_layers, "student": len(choice.kept)},
        "kept_layers": choice.kept,
        "removed_layers": choice.removed,
        "importance": [round(s, 5) for s in choice.scores],
        "ce": {k: (round(v, 4) if v is not None else None) for k, v in ce.items()},
        "ce_rows": {"source": cfg.calibration, "n": len(calib),
                    "metric": "mean over rows of the mean response-token CE (nats/token)"},
        "healing": healing,
        "settings": asdict(cfg),
        "command": cfg.command(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _save_build(folder, student, tokenizer, card)
    shutil.rmtree(work)
    return _deliver(folder, out)


def _choose(cfg: StudentConfig, teacher, tokenizer, calib, work: Path):
    """The layers to keep (:func:`spectrumkd.models.importance.choose_layers`), logged, and kept in
    ``work/choice.json`` so that a resumed build does not measure them again."""
    from spectrumkd.fileio import atomic_write_text, read_json
    from spectrumkd.models.importance import LayerChoice, choose_layers

    saved = work / "choice.json"
    n_layers = teacher.config.num_hidden_layers
    if saved.is_file():
        choice = LayerChoice(**read_json(saved, what="layer choice"))
        _log(f"{cfg.method}: keeping {len(choice.kept)} of {n_layers} layers (from {saved})")
        return choice
    keep = cfg.keep if cfg.keep is not None else default_keep(n_layers)
    judge = partial(_judge_candidate, teacher=teacher, rows=calib[: cfg.refine_rows])
    choice = choose_layers(teacher, _calibration_batches(calib, tokenizer.pad_token_id), keep=keep,
                           method=cfg.method, every=cfg.every, refine=cfg.refine, judge=judge)
    _log(f"{cfg.method}: keeping {len(choice.kept)} of {n_layers} layers, removing {choice.removed}")
    atomic_write_text(saved, json.dumps(asdict(choice)))
    return choice


def _judge_candidate(kept: list[int], *, teacher, rows) -> float:
    """Calibration CE of the teacher pruned to ``kept`` (refines angular candidates), logged."""
    from spectrumkd.models import prune_layers

    ce = mean_ce(prune_layers(teacher, kept), rows)
    gone = sorted(set(range(teacher.config.num_hidden_layers)) - set(kept))
    _log(f"candidate: without layers [{gone[0]}, {gone[-1] + 1}), calibration CE {ce:.3f}")
    return ce


def _prune_and_heal(cfg: StudentConfig, teacher, tokenizer, calib, kept: list[int], work: Path):
    """``(student, CE of teacher / pruned / healed, healing record or None)``."""
    from spectrumkd.models import prune_layers

    student = prune_layers(teacher, kept)
    ce = {"teacher": mean_ce(teacher, calib), "pruned": mean_ce(student, calib)}
    _log(f"calibration CE: teacher {ce['teacher']:.3f}, pruned {ce['pruned']:.3f} nats/token")
    healing = None
    if cfg.heal_steps > 0:
        _log(f"healing: {cfg.heal_steps} KD steps of {cfg.heal_batch_size} rows from {cfg.heal_data}")
        healing = _heal(cfg, student, teacher, tokenizer, work)
        ce["healed"] = mean_ce(student.eval(), calib)
        _log(f"calibration CE after healing: {ce['healed']:.3f} nats/token")
    else:
        ce["healed"] = None
    return student, ce, healing


def _save_build(folder: Path, student, tokenizer, card: dict) -> None:
    """Write the student and its card to ``folder`` through a ``.partial`` folder and a rename."""
    from spectrumkd.models import save_model

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(student, tmp, tokenizer=tokenizer)
    card = {**card, "files": _digests(tmp)}  # checked before every reuse (entry_problem)
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    _log(f"built {folder} in {card['seconds']:.0f} s")


def _digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but the card."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel != CARD and path.is_file() and not path.is_symlink():
            h = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
            out[rel] = h.hexdigest()
    return out


PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Weight files that are loaded by unpickling: a cache entry holding one is not used."""


def entry_problem(folder: Path) -> str | None:
    """Why the cached build ``folder`` may not be used, or None when it is intact: only regular
    files and folders (no symlinks, which could point anywhere), ``config.json`` and safetensors
    weights, no pickle weights, and every file's sha256 as its card records it."""
    from spectrumkd.fileio import read_json

    for path in folder.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return f"{path.relative_to(folder)} is a link or a special file"
    try:
        card = read_json(folder / CARD, what="student card")
    except SpectrumKDError as exc:
        return str(exc)
    recorded = card.get("files")
    if not isinstance(recorded, dict):
        return "its card records no file digests (built by an older spectrumkd)"
    names = set(recorded)
    if "config.json" not in names:
        return "no config.json"
    if any(n.endswith(PICKLE_WEIGHTS) for n in names) or not any(n.endswith(".safetensors") for n in names):
        return "its weights are not (only) safetensors"
    actual = _digests(folder)
    if set(actual) != names:
        return f"files differ from its card ({sorted(set(actual) ^ names)[:3]})"
    changed = sorted(n for n in names if actual[n] != recorded[n])
    return f"{changed[0]} was changed after the build" if changed else None


def _deliver(folder: Path, out: Path | None) -> Path:
    if out is None:
        return folder
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(folder, out, symlinks=True)  # entry_problem refused links; never follow one
    return out
