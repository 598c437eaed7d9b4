"""The metric panel on tiny random models: float64 references, end points, the teacher cache."""

import json

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.data import build_examples
from spectrumkd.evaluate.panel import heldout, reference_examples, sample_examples, sample_nll
from spectrumkd.evaluate.sets import EvalItem
from spectrumkd.evaluate.teacher_logprobs import (
    TeacherLogprobs,
    logprobs_fingerprint,
    teacher_logprobs,
)
from spectrumkd.models import tiny_random_model, tiny_tokenizer

RECORDS = [
    {"id": f"r{i}", "instruction": f"Name {w} things you see in the park.", "output": f" The {w} cat sat on a mat."}
    for i, w in enumerate(["two", "three", "many", "some", "five"])
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    exs, dropped = build_examples(RECORDS, tok, max_length=128)
    assert not dropped
    return exs


@pytest.fixture(scope="module")
def student():
    return tiny_random_model("llama", layers=1, hidden=32, seed=1)


@pytest.fixture(scope="module")
def teacher():
    return tiny_random_model("llama", layers=2, hidden=32, seed=2)


def _logprobs64(model, ex):
    """float64 log-probs ``[n, V]`` of one example's response positions, and their targets."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1].double()
    labels = torch.tensor(ex.labels[1:])
    keep = labels != -100
    return torch.log_softmax(logits[keep], dim=-1), labels[keep]


def _reference(model, teacher, examples):
    ce, ent, kl = [], [], []
    for ex in examples:
        lq, y = _logprobs64(model, ex)
        lp, _ = _logprobs64(teacher, ex)
        ce.append(float(-lq.gather(1, y[:, None]).mean()))
        ent.append(float(-(lq.exp() * lq).sum(-1).mean()))
        kl.append(float((lp.exp() * (lp - lq)).sum(-1).mean()))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"heldout_ce": mean(ce), "entropy": mean(ent), "heldout_kl": mean(kl)}


def test_heldout_matches_a_float64_reference(tmp_path, tok, examples, student, teacher):
    cached = teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                              root=tmp_path)
    assert cached.bytes_per_token == 2 * len(tok)
    got = heldout(student, examples, pad_id=tok.pad_token_id, teacher=cached, batch_size=2)
    want = _reference(student, teacher, examples)
    assert got["heldout_ce"] == pytest.approx(want["heldout_ce"], rel=1e-5)
    assert got["entropy"] == pytest.approx(want["entropy"], rel=1e-5)
    assert got["heldout_kl"] == pytest.approx(want["heldout_kl"], rel=1e-3, abs=1e-4)  # float16 cache
    assert got["rows"] == len(examples)
    assert got["tokens"] == sum(ex.num_response_tokens for ex in examples)


def test_heldout_ce_is_the_scoring_rule(tok, examples, student):
    from spectrumkd.train.student import mean_ce

    got = heldout(student, examples, pad_id=tok.pad_token_id)
    assert "heldout_kl" not in got  # no teacher: absent, not made up
    assert got["heldout_ce"] == pytest.approx(mean_ce(student, examples), rel=1e-6)


def test_end_points(tmp_path, tok, examples, teacher):
    cached = teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                              root=tmp_path)
    itself = heldout(teacher, examples, pad_id=tok.pad_token_id, teacher=cached)
    assert 0 <= itself["heldout_kl"] < 2e-4  # KL(p‖p) = 0 up to the float16 storage
    uniform = tiny_random_model("llama", layers=1, hidden=32, seed=5)
    with torch.no_grad():
        uniform.get_output_embeddings().weight.zero_()  # every logit 0: q = 1/V
    u = heldout(uniform, examples, pad_id=tok.pad_token_id, teacher=cached)
    log_v = float(torch.log(torch.tensor(float(len(tok)), dtype=torch.float64)))
    assert u["entropy"] == pytest.approx(log_v, rel=1e-6)
    assert u["heldout_ce"] == pytest.approx(log_v, rel=1e-6)
    # KL(p‖uniform) = log V − H(p)
    h_p = heldout(teacher, examples, pad_id=tok.pad_token_id)["entropy"]
    assert u["heldout_kl"] == pytest.approx(log_v - h_p, rel=1e-3)


def test_cache_is_reused_refused_or_rebuilt_on_mismatch(tmp_path, tok, examples, student, teacher):
    logs = []
    first = teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                             root=tmp_path, log=logs.append)
    assert len(logs) == 1 and "response tokens" in logs[0]
    again = teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                             root=tmp_path, log=logs.append)
    assert len(logs) == 1 and again.folder == first.folder  # reused, not rewritten
    fingerprint = logprobs_fingerprint(teacher, examples, len(tok))
    # another teacher or other rows: another folder, never the old one
    other = teacher_logprobs(student, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                             root=tmp_path)
    assert other.folder != first.folder
    assert teacher_logprobs(teacher, examples[:3], pad_id=tok.pad_token_id, vocab_size=len(tok),
                            root=tmp_path).folder not in (first.folder, other.folder)
    # an index that says something else (an old format, a tampered file): refused, then rebuilt
    index = first.folder / "index.json"
    header = json.loads(index.read_text())
    index.write_text(json.dumps({**header, "format": 0, "teacher_fingerprint": "old"}))
    with pytest.raises(SpectrumKDError, match=r"format, teacher_fingerprint differ.*delete"):
        TeacherLogprobs.open(first.folder, fingerprint)
    rebuilt = teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok),
                               root=tmp_path, log=logs.append)
    assert "rebuilding" in logs[1] and "teacher_fingerprint differ" in logs[1]
    assert json.loads(index.read_text())["teacher_fingerprint"] == fingerprint["teacher_fingerprint"]
    got = heldout(student, examples, pad_id=tok.pad_token_id, teacher=rebuilt)
    assert got["heldout_kl"] == pytest.approx(_reference(student, teacher, examples)["heldout_kl"],
                                              rel=1e-3, abs=1e-4)
    (rebuilt.folder / "logprobs.npy").unlink()  # a torn cache is rebuilt as well
    teacher_logprobs(teacher, examples, pad_id=tok.pad_token_id, vocab_size=len(tok), root=tmp_path,
                     log=logs.append)
    assert "rebuilding" in logs[3] and "logprobs.npy is missing" in logs[3]


def test_processes_building_one_cache_at_once_both_succeed(tmp_path, tok, examples, teacher):
    # Two experiment shards on one machine evaluate on the same rows: each writes its own temp
    # folder; the one that renames second finds the complete cache and drops its copy.
    from concurrent.futures import ThreadPoolExecutor

    from spectrumkd.evaluate.teacher_logprobs import _folder_name, _write

    fingerprint = logprobs_fingerprint(teacher, examples, len(tok))
    folder = tmp_path / _folder_name(fingerprint)
    write = lambda: _write(folder, teacher, examples, fingerprint, pad_id=tok.pad_token_id,  # noqa: E731
                           batch_size=4)
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(write), pool.submit(write)]:
            f.result()
    write()  # and once more onto the finished cache
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left
    cached = TeacherLogprobs.open(folder, fingerprint)
    got = heldout(teacher, examples, pad_id=tok.pad_token_id, teacher=cached)
    assert got["heldout_kl"] == pytest.approx(0.0, abs=1e-3)


def test_sample_nll_matches_a_float64_reference(tok, teacher):
    prompts = ["Name two colours.", "Who sat on the mat?", "Say hi"]
    samples = [[5, 6, 7, tok.eos_token_id], [], [9, 10]]
    exs, empty = sample_examples(tok, prompts, samples)
    assert empty == 1 and [ex.input_ids[-len(s):] for ex, s in zip(exs, [samples[0], samples[2]])] == [
        samples[0], samples[2]]
    want = []
    for prompt, tokens in ((prompts[0], samples[0]), (prompts[2], samples[2])):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([ids + tokens])).logits[0].double()
        lp = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
        want.append(float(-lp.gather(1, torch.tensor(tokens)[:, None]).mean()))
    assert sample_nll(teacher, exs, pad_id=tok.pad_token_id) == pytest.approx(sum(want) / 2, rel=1e-5)


def test_reference_rows_follow_the_project_rule(tok):
    items = [EvalItem("a", "### Instruction:\nSay hi\n\n### Response:\n", ("Hi there.", "Hello.")),
             EvalItem("b", "x " * 40, ("too long a prompt",))]
    exs, skipped = reference_examples(items, tok, max_prompt_length=16, max_length=64)
    assert [ex.id for ex in exs] == ["a"] and [s["reason"] for s in skipped] == ["prompt_too_long"]
    ids = tok(items[0].prompt + "Hi there.", add_special_tokens=False)["input_ids"]
    assert exs[0].input_ids == [*ids, tok.eos_token_id]  # first reference + EOS
