"""run_scoring: the file format, reuse, mismatch errors, resume after an interruption."""

import json

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import read_scores
from spectrumkd.models import tiny_random_model
from spectrumkd.scoring import run_scoring, score_examples

KW = {"model_name": "tiny", "template": "dolly", "max_length": 512, "max_prompt_length": 256,
      "batch_tokens": 200, "progress": False}


@pytest.fixture
def model():
    return tiny_random_model("llama", hidden=32)


def test_writes_design_format_in_dataset_order(model, examples, tmp_path):
    out = tmp_path / "s.jsonl"
    scores = run_scoring(model, examples, out, **KW)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    header = lines[0]
    for key in ("metric", "model", "model_fingerprint", "dataset_fingerprint", "template", "max_length", "created"):
        assert key in header
    assert header["spectrumkd"] == "scores" and header["n_examples"] == len(examples)
    assert [r["id"] for r in lines[1:]] == [e.id for e in examples]
    assert [r["score"] for r in lines[1:]] == scores
    f = read_scores(out)  # the curriculum's reader accepts it
    assert f.ids == [e.id for e in examples]


def test_reuse_without_running_the_model(model, examples, tmp_path):
    out = tmp_path / "s.jsonl"
    first = run_scoring(model, examples, out, **KW)
    text = out.read_text()
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    assert run_scoring(model, examples, out, **KW) == first
    handle.remove()
    assert calls == [] and out.read_text() == text


def test_other_model_dataset_or_metric_is_an_error(model, examples, tmp_path):
    out = tmp_path / "s.jsonl"
    run_scoring(model, examples, out, **KW)
    other = tiny_random_model("llama", hidden=32, seed=1)
    with pytest.raises(SpectrumKDError, match="model_fingerprint"):
        run_scoring(other, examples, out, **KW)
    with pytest.raises(SpectrumKDError, match="dataset_fingerprint"):
        run_scoring(model, examples[:-1], out, **KW)
    with pytest.raises(SpectrumKDError, match="reduction"):
        run_scoring(model, examples, out, **{**KW, "reduction": "sum"})
    with pytest.raises(SpectrumKDError, match="max_length"):
        run_scoring(model, examples, out, **{**KW, "max_length": 256})
    fresh = run_scoring(other, examples, out, overwrite=True, **KW)
    assert read_scores(out).scores.tolist() == fresh


def test_not_a_scores_file_is_an_error(model, examples, tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text('{"id": 1, "score": 2.0}\n')
    with pytest.raises(SpectrumKDError, match="no spectrumkd scores header"):
        run_scoring(model, examples, out, **KW)


def test_resume_after_ctrl_c_gives_the_same_file(model, examples, tmp_path):
    full = tmp_path / "full.jsonl"
    want = run_scoring(model, examples, full, **KW)
    out = tmp_path / "s.jsonl"
    calls = []

    def interrupt(*_):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = model.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_scoring(model, examples, out, **KW)
    handle.remove()
    partial = [json.loads(x) for x in out.read_text().splitlines()]  # every line is valid JSON
    assert 1 < len(partial) < len(examples) + 1
    done = {r["id"] for r in partial[1:]}
    resumed_calls = []
    handle = model.register_forward_hook(lambda *a: resumed_calls.append(1))
    got = run_scoring(model, examples, out, **KW)
    handle.remove()
    assert got == want
    assert out.read_text().splitlines()[1:] == full.read_text().splitlines()[1:]
    assert json.loads(out.read_text().splitlines()[0])["dataset_fingerprint"] == json.loads(
        full.read_text().splitlines()[0])["dataset_fingerprint"]
    # only the unfinished examples were recomputed
    assert len(resumed_calls) < len(calls) + len(resumed_calls) and len(done) >= 2


def test_torn_last_line_is_cut_and_resumed(model, examples, tmp_path):
    out = tmp_path / "s.jsonl"
    want = run_scoring(model, examples, out, **KW)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:9])  # killed mid-write
    assert run_scoring(model, examples, out, **KW) == want
    assert len(out.read_text().splitlines()) == len(examples) + 1


def test_nan_never_written(model, examples, tmp_path):
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    out = tmp_path / "s.jsonl"
    with pytest.raises(SpectrumKDError, match="NaN"):
        run_scoring(model, examples, out, **KW)
    assert "NaN" not in out.read_text() and len(out.read_text().splitlines()) == 1


def test_score_examples_handles_model_without_pad_id(examples):
    model = tiny_random_model("gpt2", layers=1, hidden=32)
    model.config.pad_token_id = None
    assert len(score_examples(model, examples, progress=False)) == len(examples)
