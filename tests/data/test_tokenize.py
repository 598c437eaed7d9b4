"""Tokenization with prompt masks (MiniLLM's rule), EOS, and the length filters."""

import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator, build_examples, load_records, render_prompt, tokenize_example
from spectrumkd.models import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_minillm_rule(tok):
    prompt, output = "### Instruction:\nSay hi\n\n### Response:\n", "Hello there."
    ids, labels = tokenize_example(tok, prompt, output)
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    full = [*tok.encode(prompt + output, add_special_tokens=False), tok.eos_token_id]
    assert ids == full
    assert labels == [-100] * len(prompt_ids) + full[len(prompt_ids):]
    # appending the EOS id equals tokenizing the EOS text
    assert ids == tok.encode(prompt + output + tok.eos_token, add_special_tokens=False)


def test_filter_drops_exactly_the_over_long(tok):
    recs = [{"instruction": "w " * n, "output": "x " * m} for n, m in [(5, 5), (200, 1), (5, 300), (3, 3)]]
    lens = []
    for r in recs:
        ids, labels = tokenize_example(tok, render_prompt("dolly", r), r["output"])
        lens.append((labels.count(-100), len(ids)))
    max_prompt, max_len = 60, 100
    expected = [i for i, (p, t) in enumerate(lens) if p <= max_prompt and t <= max_len]
    examples, dropped = build_examples(recs, tok, max_prompt_length=max_prompt, max_length=max_len)
    assert [e.id for e in examples] == [f"record-{i + 1}" for i in expected]
    assert {d["id"]: d["reason"] for d in dropped} == {"record-2": "prompt_too_long", "record-3": "too_long"}
    # limits are inclusive: an example exactly at the limit is kept
    p0, t0 = lens[0]
    kept, _ = build_examples(recs[:1], tok, max_prompt_length=p0, max_length=t0)
    assert len(kept) == 1
    with pytest.raises(SpectrumKDError, match="all 1 examples were dropped"):
        build_examples(recs[:1], tok, max_prompt_length=p0, max_length=t0 - 1)


def test_empty_response_dropped_missing_response_is_error(tok, tmp_path):
    ex, dropped = build_examples(
        [{"instruction": "a", "output": " "}, {"instruction": "b", "output": "y"}], tok
    )
    assert [e.id for e in ex] == ["record-2"] and dropped[0]["reason"] == "empty_response"
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"instruction": "a", "output": "x"}) + "\n" + json.dumps({"instruction": "b"}) + "\n")
    with pytest.raises(SpectrumKDError, match=r"d.jsonl:2: missing the output"):
        build_examples(load_records(p), tok)


def test_eval_prompts_without_response(tok):
    ex, _ = build_examples([{"instruction": "a", "output": ["r1", "r2"]}], tok, require_response=False)
    assert ex[0].references == ["r1", "r2"] and set(ex[0].labels) == {-100}


def test_collator_pads_to_longest(tok):
    ex, _ = build_examples([{"instruction": "a", "output": "x"}, {"instruction": "bbb ccc", "output": "yy zz"}], tok)
    out = Collator(tok.pad_token_id)(ex)
    width = max(len(e) for e in ex)
    assert out["input_ids"].shape == (2, width)
    short = min(range(2), key=lambda i: len(ex[i]))
    n = len(ex[short])
    assert out["attention_mask"][short].tolist() == [1] * n + [0] * (width - n)
    assert out["labels"][short, n:].eq(-100).all() and out["input_ids"][short, n:].eq(tok.pad_token_id).all()
    assert out["labels"][short, :n].tolist() == ex[short].labels
    assert Collator(tok.pad_token_id, pad_to_multiple_of=8)(ex)["input_ids"].shape[1] % 8 == 0


def test_real_dolly_mostly_fits(tok, shared_data):
    recs = load_records(shared_data / "dolly" / "dev.jsonl", limit=200)
    ex, dropped = build_examples(recs, tok)
    assert len(ex) + len(dropped) == 200 and len(ex) > 140
    assert all(e.input_ids[-1] == tok.eos_token_id for e in ex)
