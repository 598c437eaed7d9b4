"""Cached (top-k + tail bucket) KD vs online dense KD at equal steps, on the demo's setting.

Run: ``.venv/bin/python benchmarks/bench_cached_kd.py [--out runs/bench-cached-kd]`` (about 15
minutes on 2 cores, the default student built first if it is not cached). The demo's full-data arm
(``configs/demo.yaml``: SmolLM2-135M-Instruct teacher → the default student, 48 packaged Dolly rows,
4 epochs of batch 8 = 24 optimizer steps, 0.3·CE + 0.7·fkl at τ = 1) is trained twice from the
same student and seed: with the teacher cache (k = 64 ids + the tail bucket) and without it (the
teacher in memory, dense KD over the whole vocabulary). Both last checkpoints — and the student
before training — are then measured with plain transformers on the first ``--rows`` DollyEval
rows (prompts ≤ 256 tokens, rows ≤ 512, response + EOS scored): the mean over rows of the mean
response CE, and of the mean entropy of the model's next-token distribution at the same
positions (nats/token). Cached KD is right when both are within 5% of online KD's.

Last stdout line: one JSON object with ``ce_cached_over_online`` and
``entropy_cached_over_online`` (cached ÷ online) and the figures behind them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOLLY_EVAL = ROOT / "src" / "spectrumkd" / "resources" / "dolly" / "eval.jsonl"


def heldout(folder: str | Path, rows: list[dict]) -> dict:
    """Mean response CE and mean next-token entropy (nats/token) of the model in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ce, ent = [], []
    with torch.no_grad():
        for row in rows:
            prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
            answer = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if len(prompt) > 256 or len(prompt) + len(answer) > 512:
                continue
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
            logp = torch.log_softmax(logits.double(), -1)
            ce.append(float(-logp.gather(-1, torch.tensor(answer).unsqueeze(-1)).mean()))
            ent.append(float(-(logp.exp() * logp).sum(-1).mean()))
    return {"ce": round(sum(ce) / len(ce), 4), "entropy": round(sum(ent) / len(ent), 4), "rows": len(ce)}


def main() -> None:
    from spectrumkd.experiment import load_experiment, student_config
    from spectrumkd.rundir import RunDir
    from spectrumkd.train.pipeline import distill, resolve_spec
    from spectrumkd.train.student import build_student

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--out", default="runs/bench-cached-kd")
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--student", help="a student folder (default: the config's, built or cached)")
    args = p.parse_args()
    t0 = time.perf_counter()
    exp, _, arms = load_experiment(args.config)
    base = arms[exp.baseline]
    student_dir = args.student or str(build_student(student_config(exp, base)))
    teacher_dir, teacher_gguf = resolve_spec(base.teacher)
    rows = [json.loads(x) for x in DOLLY_EVAL.read_text(encoding="utf-8").splitlines()][: args.rows]
    result: dict = {"before": heldout(student_dir, rows)}
    for name, cached in (("cached", True), ("online", False)):
        cfg = arms[exp.baseline]
        cfg.teacher.spec, cfg.teacher.gguf_file = teacher_dir, teacher_gguf
        cfg.student.spec, cfg.student.gguf_file = student_dir, None
        cfg.teacher_cache.enabled = cached
        cfg.output_dir = str(Path(args.out) / name)
        rd = RunDir(cfg.output_dir)
        if not rd.is_finished(cfg.curriculum.epochs):
            distill(cfg, resume=rd.config.is_file())
        steps = max(r.get("step", 0) for r in rd.metrics() if "step" in r)
        result[name] = {**heldout(rd.latest_checkpoint() / "model", rows), "steps": steps}
        print(f"{name}: {result[name]}", flush=True)
    result["ce_cached_over_online"] = round(result["cached"]["ce"] / result["online"]["ce"], 4)
    result["entropy_cached_over_online"] = round(result["cached"]["entropy"] / result["online"]["entropy"], 4)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"before training: CE {result['before']['ce']:.3f}, entropy {result['before']['entropy']:.3f}")
    print(f"cached / online after {result['online']['steps']} steps: CE {result['ce_cached_over_online']:.3f}×, "
          f"entropy {result['entropy_cached_over_online']:.3f}× (target: within 5%)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
