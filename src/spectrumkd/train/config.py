"""The run configuration of ``spectrumkd distill``: dataclasses are the single source of truth.

A YAML file maps onto :class:`RunConfig` section by section (``teacher``, ``student``, ``data``,
``curriculum``, ``loss``, ``optim``, ``lora``, ``teacher_cache``, ``validation`` and the top-level
``seed``, ``output_dir``, ...). Dotted overrides such as ``loss.divergence=rkl`` are applied on
top, their values parsed as YAML scalars and then converted to the field's type. A key that does
not exist is an error that names it and the closest valid key (difflib). Cross-field checks live
in each ``__post_init__``; defaults that depend on other fields (``loss.ce_weight`` is 0.3 for
off-policy KD, 0 for on-policy GKD and 1 for SFT, as in the paper) are resolved there too, so the
file written to ``run/config.yaml`` (:func:`save_config`) holds every value the run used.

Every number is checked when the config loads, before any model is loaded or anything scored:
NaN and infinity are refused everywhere (:func:`_check_finite` walks every field), and each
numeric field has its range (``lr > 0``, ``0 <= ce_weight <= 1``, ``tau0 > 0``, ...).

This module does not load models or data; :mod:`spectrumkd.train.pipeline` does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spectrumkd import SpectrumKDError, configfile
from spectrumkd.curriculum.spec import MAX_EPOCHS, MAX_SEED, PlanSpec
from spectrumkd.fileio import atomic_write_text
from spectrumkd.losses.objective import DIVERGENCES
from spectrumkd.scoring.metrics import METRICS, REDUCTIONS

__all__ = [
    "CurriculumConfig",
    "DataConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TeacherCacheConfig",
    "ValidationConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "resolve_data_paths",
    "save_config",
]

LOSS_MODES = ("sft", "kd", "gkd")


def _check_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise SpectrumKDError(f"{section}.{name}: {value!r} is not one of {', '.join(choices)}")


def _check_range(
    section: str, name: str, value: float, lo: float, hi: float | None = None, *, open_lo: bool = False
) -> None:
    """``lo <= value <= hi`` (``lo < value`` with ``open_lo``); NaN fails every range."""
    low_ok = value > lo if open_lo else value >= lo
    if not (low_ok and (hi is None or value <= hi)):  # written so that NaN is out of range
        bounds = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        if hi is None:
            bounds = f"> {lo}" if open_lo else f">= {lo}"
        raise SpectrumKDError(f"{section}.{name}: {value!r} must be {bounds}")


def _check_finite(obj: Any, prefix: str = "") -> None:
    """Refuse NaN and ±inf in every float field (lists included) of a config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.")
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise SpectrumKDError(f"{key}: {value!r} is not a finite number")


@dataclass
class ModelConfig:
    """A model to load (``spectrumkd.models.load_model``)."""

    spec: str | None = None
    """Hub id, local folder, ``.gguf`` path, ``smollm2`` or ``tiny-random:llama?layers=2&hidden=64``."""
    gguf_file: str | None = None
    """GGUF file name inside ``spec`` when ``spec`` is a folder."""
    prune_layers: list[int] | None = None
    """Keep only these decoder layers (0-based). For the student with ``spec`` unset, the student
    is a layer-pruned copy of the teacher."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16 (this CPU: keep float32)."""

    def __post_init__(self) -> None:
        _check_choice("model", "dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if self.prune_layers is not None:
            if not self.prune_layers or len(set(self.prune_layers)) != len(self.prune_layers):
                raise SpectrumKDError(f"prune_layers must be distinct layer indices, got {self.prune_layers}")
            if min(self.prune_layers) < 0:
                raise SpectrumKDError(f"prune_layers must be >= 0, got {self.prune_layers}")


@dataclass
class DataConfig:
    """Training and validation data (``spectrumkd.data``)."""

    source: str = ""
    """JSONL/JSON/Parquet path or hub name. Relative paths: see :func:`load_config`."""
    template: str = "dolly"
    """Prompt template (docs/design.md §3)."""
    limit: int | None = None
    """Use only the first ``limit`` records."""
    max_prompt_length: int = 256
    max_length: int = 512
    validation_source: str | None = None
    """Validation records; unset: the last ``validation.size`` examples of ``source`` are held out."""

    def __post_init__(self) -> None:
        if self.limit is not None:
            _check_range("data", "limit", self.limit, 1)
        _check_range("data", "max_prompt_length", self.max_prompt_length, 1)
        _check_range("data", "max_length", self.max_length, 2)


@dataclass
class CurriculumConfig(PlanSpec):
    """Which examples each epoch trains on and how they are scored: the plan parameters are the
    fields of :class:`spectrumkd.curriculum.PlanSpec` (meanings there); this section adds the
    scoring ones and checks every value when the config loads."""

    epochs: int = 5
    """Number of epochs n. The run config's default is a short 5-epoch run (1 warm-up), so that a
    config that leaves it out is a quick try; ``PlanSpec`` and ``spectrumkd plan`` default to the
    paper's 25/5, and the configs under ``configs/paper/`` set theirs."""
    warmup_epochs: int = 1
    """Warm-up epochs k (see ``PlanSpec``); 1 here to go with the 5-epoch default (paper: 5)."""
    metric: str = field(default="ce", metadata={"choices": METRICS})
    """Difficulty metric (docs/design.md §4): ce | rougel | entropy | length."""
    reduction: str = field(default="mean", metadata={"choices": REDUCTIONS})
    batch_tokens: int = 4096
    """Scoring batch budget in (padded) tokens."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "choices" in f.metadata:
                _check_choice("curriculum", f.name, getattr(self, f.name), f.metadata["choices"])
        _check_range("curriculum", "epochs", self.epochs, 1, MAX_EPOCHS)
        _check_range("curriculum", "warmup_epochs", self.warmup_epochs, 0)
        _check_range("curriculum", "batch_tokens", self.batch_tokens, 1)
        for name, high in (("lambda_a", 0.5), ("lambda_b", 1.0)):
            value = getattr(self, name)
            if isinstance(value, str):
                if value != "auto":
                    raise SpectrumKDError(f"curriculum.{name}: {value!r} is not a number or auto")
            else:
                _check_range("curriculum", name, value, 0.0, high)
        a, b = self.lambda_a, self.lambda_b
        if not isinstance(a, str) and not isinstance(b, str) and 2 * a + b > 1:
            raise SpectrumKDError(
                f"curriculum: 2·lambda_a + lambda_b = {2 * a + b:g} must be <= 1 (docs/design.md §5)"
            )
        _check_range("curriculum", "tau0", self.tau0, 0.0, open_lo=True)
        _check_range("curriculum", "taun", self.taun, 0.0, open_lo=True)
        _check_range("curriculum", "buckets", self.buckets, 1)
        if self.epochs_per_stage is not None:
            _check_range("curriculum", "epochs_per_stage", self.epochs_per_stage, 1)
        if self.shuffle_seed is not None:
            _check_range("curriculum", "shuffle_seed", self.shuffle_seed, 0, MAX_SEED)
        if self.kind in ("spectrumkd", "random-window") and self.epochs < self.warmup_epochs + 2:
            raise SpectrumKDError(
                f"curriculum.epochs={self.epochs} must be >= warmup_epochs + 2 = "
                f"{self.warmup_epochs + 2} for the {self.kind} sliding window (docs/design.md §5)"
            )
        if len(self.static_range) != 2 or not 0 <= self.static_range[0] < self.static_range[1] <= 1:
            raise SpectrumKDError(
                f"curriculum.static_range must be [lo, hi] with 0 <= lo < hi <= 1, got {self.static_range}"
            )


@dataclass
class LossConfig:
    """The objective ``ce_weight·CE + (1−ce_weight)·τ²·D`` (docs/design.md §6, ``spectrumkd.losses``)."""

    mode: str = "kd"
    """sft (CE only) | kd (off-policy) | gkd (on-policy: student samples with probability gkd_lambda)."""
    divergence: str | None = None
    """fkl | rkl | jsd | tvd | skl | srkl; unset: fkl for kd, jsd for gkd."""
    ce_weight: float | None = None
    """α of the paper; unset: 0.3 for kd, 0 for gkd, 1 for sft."""
    skew: float = 0.1
    """s of skl/srkl (DistiLLM)."""
    teacher_weight: float = 0.5
    """β of jsd (TRL's convention; 0 = fkl, 1 = rkl)."""
    chunk_size: int | None = None
    """Compute the loss over chunks of this many tokens (memory)."""
    gkd_lambda: float = 0.5
    """GKD: probability per optimizer step that responses are the student's own samples."""
    gkd_max_new_tokens: int = 64
    """GKD: the longest student sample."""

    def __post_init__(self) -> None:
        _check_choice("loss", "mode", self.mode, LOSS_MODES)
        if self.divergence is None:
            self.divergence = {"sft": "none", "kd": "fkl", "gkd": "jsd"}[self.mode]
        if self.mode == "sft":
            if self.divergence != "none":
                raise SpectrumKDError(f"loss.mode=sft takes no divergence, got {self.divergence!r}")
        else:
            _check_choice("loss", "divergence", self.divergence, DIVERGENCES)
        if self.ce_weight is None:
            self.ce_weight = {"sft": 1.0, "kd": 0.3, "gkd": 0.0}[self.mode]
        from spectrumkd.losses.objective import check_objective  # the loss's one check (torch)

        check_objective(self.divergence, 1.0, self.ce_weight, self.skew, self.teacher_weight,
                        where="loss.")  # τ comes from the curriculum  # fmt: skip
        if self.mode == "sft" and self.ce_weight != 1.0:
            raise SpectrumKDError(f"loss.mode=sft needs ce_weight=1.0, got {self.ce_weight}")
        _check_range("loss", "gkd_lambda", self.gkd_lambda, 0.0, 1.0)
        _check_range("loss", "gkd_max_new_tokens", self.gkd_max_new_tokens, 1)
        if self.chunk_size is not None:
            _check_range("loss", "chunk_size", self.chunk_size, 1)

    def objective(self, temperature: float):
        """This section's :class:`~spectrumkd.losses.KDObjective` at the curriculum's ``temperature``.

        >>> LossConfig(mode="gkd").objective(2.0)
        KDObjective(divergence='jsd', temperature=2.0, ce_weight=0.0, skew=0.1, teacher_weight=0.5)
        """
        from spectrumkd.losses.objective import KDObjective

        return KDObjective(self.divergence, temperature, self.ce_weight, self.skew, self.teacher_weight)


@dataclass
class OptimConfig:
    """AdamW, the learning-rate schedule, batching and precision."""

    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.0
    """Share of the plan's optimizer steps spent warming up the learning rate linearly."""
    warmup_steps: int | None = None
    """Absolute warm-up steps; overrides warmup_ratio."""
    schedule: str = "cosine"
    """cosine | linear | constant decay after warm-up, over the plan's total steps."""
    grad_clip: float | None = 1.0
    batch_size: int = 8
    """Examples per micro-batch per process."""
    grad_accumulation: int = 1
    mixed_precision: str = "auto"
    """auto (bf16 on a GPU that supports it, else fp32) | no | bf16 | fp16."""
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    """Give each optimizer step rows of similar length (seeded megabatches of 8 steps sorted by
    length, step order shuffled): the same ids each epoch, far less padding. false: random steps."""

    def __post_init__(self) -> None:
        _check_range("optim", "lr", self.lr, 0.0, open_lo=True)
        _check_range("optim", "weight_decay", self.weight_decay, 0.0)
        _check_range("optim", "warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _check_choice("optim", "schedule", self.schedule, ("cosine", "linear", "constant"))
        _check_choice("optim", "mixed_precision", self.mixed_precision, ("auto", "no", "bf16", "fp16"))
        _check_range("optim", "batch_size", self.batch_size, 1)
        _check_range("optim", "grad_accumulation", self.grad_accumulation, 1)
        if self.warmup_steps is not None:
            _check_range("optim", "warmup_steps", self.warmup_steps, 0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):  # NaN fails too
            raise SpectrumKDError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.grad_clip is not None:
            _check_range("optim", "grad_clip", self.grad_clip, 0.0, open_lo=True)


@dataclass
class LoraConfig:
    """LoRA via ``peft`` (the paper's OpenLLaMA and Qwen settings); full fine-tuning when disabled."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """All attention and MLP linear layers (llama/qwen2 names)."""
    merge_on_save: bool = True
    """Also save the merged model beside the adapter."""

    def __post_init__(self) -> None:
        _check_range("lora", "r", self.r, 1)
        _check_range("lora", "alpha", self.alpha, 0.0, open_lo=True)
        _check_range("lora", "dropout", self.dropout, 0.0, 1.0)
        if not self.target_modules:
            raise SpectrumKDError("lora.target_modules is empty")


@dataclass
class TeacherCacheConfig:
    """Top-k teacher log-probabilities on disk (:mod:`spectrumkd.train.teacher_cache`)."""

    enabled: bool = False
    k: int = 64
    dir: str | None = None
    """Cache folder; unset: ``<output_dir>/teacher_cache``. Reused when its fingerprint matches."""
    dtype: str = "float16"
    """Stored log-prob dtype: float16 (384 B/token at k=64) or float32 (512 B/token, exact)."""

    def __post_init__(self) -> None:
        _check_range("teacher_cache", "k", self.k, 1)
        _check_choice("teacher_cache", "dtype", self.dtype, ("float16", "float32"))


@dataclass
class ValidationConfig:
    """Per-epoch validation: loss and greedy ROUGE-L (checkpoint ``best`` is chosen by ROUGE-L);
    the held-out curve: CE, KL(teacher‖student) and entropy at fixed points of the step budget."""

    size: int = 0
    """Validation examples (0 = no validation). From ``data.validation_source`` when set, else
    the last ``size`` examples of ``data.source`` are held out of training."""
    max_new_tokens: int = 32
    batch_size: int = 8
    curve_points: int = 4
    """Held-out curve points: step 0 and this many evenly spaced optimizer steps ending at the
    last, each a ``curve`` row of ``metrics.jsonl`` (0: no curve). KL needs the teacher, whose
    log-probs on the curve rows are computed once before training."""
    curve_rows: int = 16
    """Rows of the held-out curve: the first ones of ``data.validation_source`` when set, else of
    the validation examples held out of ``data.source``; none there: no curve."""

    def __post_init__(self) -> None:
        _check_range("validation", "size", self.size, 0)
        _check_range("validation", "max_new_tokens", self.max_new_tokens, 1)
        _check_range("validation", "batch_size", self.batch_size, 1)
        _check_range("validation", "curve_points", self.curve_points, 0)
        _check_range("validation", "curve_rows", self.curve_rows, 1)


@dataclass
class RunConfig:
    """Everything ``spectrumkd distill`` needs; written out resolved as ``run/config.yaml``."""

    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    seed: int = 0
    output_dir: str = "runs/distill"
    """The run directory (docs/design.md §7); must be non-empty. ``distill`` refuses one that holds
    another run unless resumed (same config) or overwritten."""
    log_every: int = 1
    """Write a step line to metrics.jsonl every this many optimizer steps."""
    save_every_steps: int | None = None
    """Also checkpoint every this many optimizer steps inside an epoch (exact resume mid-epoch);
    unset: at epoch ends only."""
    tensorboard: bool = False
    """Also log to TensorBoard under ``<output_dir>/tensorboard``."""
    progress: bool = True
    """Show a tqdm progress bar with ETA."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_range("run", "log_every", self.log_every, 1)
        if self.save_every_steps is not None:
            _check_range("run", "save_every_steps", self.save_every_steps, 1)
        _check_range("run", "seed", self.seed, 0, MAX_SEED)
        if not self.output_dir.strip():
            raise SpectrumKDError("output_dir is empty; name a run directory (e.g. runs/my-run)")
        if self.student.spec is None and self.student.prune_layers is None:
            raise SpectrumKDError("student.spec is required (or student.prune_layers to prune the teacher)")
        if self.loss.mode != "sft" and self.teacher.spec is None:
            raise SpectrumKDError(f"teacher.spec is required for loss.mode={self.loss.mode}")
        if self.student.spec is None and self.teacher.spec is None:
            raise SpectrumKDError("student.prune_layers prunes the teacher, but teacher.spec is unset")
        if self.teacher_cache.enabled and self.loss.mode != "kd":
            raise SpectrumKDError(
                f"teacher_cache.enabled needs loss.mode=kd (off-policy); loss.mode={self.loss.mode} "
                "scores responses the cache does not hold"
            )


# Hugging Face TrainingArguments names people type out of habit → ours.
_ALIASES = {
    "learning_rate": "lr", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accumulation", "max_grad_norm": "grad_clip",
    "num_train_epochs": "epochs", "lr_scheduler_type": "schedule", "alpha": "ce_weight",
}  # fmt: skip


def config_from_dict(data: dict, *, where: str = "config") -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts (a parsed YAML file).

    >>> cfg = config_from_dict({"teacher": {"spec": "tiny-random:llama"},
    ...                         "student": {"spec": "tiny-random:llama"}, "loss": {"mode": "gkd"}})
    >>> cfg.loss.divergence, cfg.loss.ce_weight
    ('jsd', 0.0)
    >>> config_from_dict({"loss": {"divergense": "rkl"}})
    Traceback (most recent call last):
    ...
    spectrumkd.SpectrumKDError: config: unknown keys ['divergense'] (loss.divergense); did you mean 'loss.divergence'?
    """
    return configfile.build(RunConfig, data, where=where, aliases=_ALIASES)


def apply_overrides(data: dict, overrides: list[str], *, prefix: str = "") -> dict:
    """Apply ``section.key=value`` strings to nested dicts (values parsed as YAML scalars);
    errors spell keys with ``prefix`` (``"run."`` in an experiment).

    >>> apply_overrides({"loss": {"mode": "kd"}}, ["loss.divergence=rkl", "optim.lr=1e-4"])
    {'loss': {'mode': 'kd', 'divergence': 'rkl'}, 'optim': {'lr': '1e-4'}}
    """
    return configfile.apply_overrides(RunConfig, data, overrides, aliases=_ALIASES, prefix=prefix)


def _resolve_path(raw: str, config_path: Path | None) -> str:
    """Resolve a relative data path against the cwd, the config's folder, then its parent."""
    p = Path(raw).expanduser()
    if p.is_absolute():
        return str(p)
    candidates = [Path.cwd() / p]
    if config_path is not None:
        folder = config_path.resolve().parent
        candidates += [folder / p, folder.parent / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return raw  # not a local path: a hub name, or a missing file the data loader reports


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, **sections: dict
) -> RunConfig:
    """Read a YAML config, apply dotted ``overrides`` and return the checked :class:`RunConfig`.

    Relative ``data.source``/``data.validation_source`` paths are tried against the current
    directory, then the config file's folder, then that folder's parent (so ``configs/x.yaml``
    can name ``../shared/data/...`` relative to the checkout from any working directory).
    ``sections`` (e.g. ``loss={"mode": "sft"}``) are merged in before the overrides.
    """
    config_path = Path(path) if path is not None else None
    where = str(config_path) if config_path is not None else "config"
    data = configfile.read_mapping(config_path) if config_path is not None else {}
    for name, section in sections.items():
        merged = dict(data.get(name) or {}) if isinstance(section, dict) else None
        if merged is not None:
            merged.update(section)
            data[name] = merged
        else:
            data[name] = section
    data = apply_overrides(data, overrides or [])
    return resolve_data_paths(config_from_dict(data, where=where), config_path)


def resolve_data_paths(cfg: RunConfig, config_path: Path | None) -> RunConfig:
    """``cfg`` with relative ``data.source``/``data.validation_source`` resolved (see load_config)."""
    for attr in ("source", "validation_source"):
        raw = getattr(cfg.data, attr)
        if raw:
            setattr(cfg.data, attr, _resolve_path(raw, config_path))
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config (every default included) as YAML; it loads back equal."""
    return atomic_write_text(path, yaml.safe_dump(asdict(cfg), sort_keys=False))
