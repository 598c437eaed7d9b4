"""Templates render the paper's figures (and MiniLLM's exact Dolly text) byte for byte."""

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.data import load_records, math_few_shot, render_prompt
from spectrumkd.data.formats import Record
from spectrumkd.models import tiny_tokenizer


def test_dolly_reproduces_every_dollyeval_prompt(shared_data):
    recs = load_records(shared_data / "dolly" / "valid.jsonl")
    assert len(recs) == 500
    assert 50 < sum(bool(r.input) for r in recs) < 450  # both variants are exercised
    mismatched = [r.id for r in recs if render_prompt("dolly", r) != r.raw["prompt"]]
    assert mismatched == []


def test_dolly_figure5_with_input_exact():
    rec = Record(id=1, instruction="Sum {a}.", input="1 and 2")
    assert render_prompt("dolly", rec) == (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSum {a}.\n\n### Input:\n1 and 2\n\n### Response:\n"
    )


def test_math_figure7_with_few_shot():
    shot = Record(id="s", instruction="1+1?", output="2")
    text = render_prompt("math", Record(id=1, instruction="2+2?"), few_shot=[shot])
    fig7 = (
        "### Problem:\n{q}\nPlease reason step by step, and put your final answer within "
        "\\boxed{{}}.\n\n### Solution:\n"
    )
    assert text == fig7.format(q="1+1?") + "2\n\n" + fig7.format(q="2+2?")


def test_code_figure8():
    assert render_prompt("code", Record(id=1, instruction="Add two numbers.")) == (
        "Please provide a self-contained Python script that solves the following problem in a "
        "markdown code block:\n\n### Problem:\nAdd two numbers.\n\n### Response:\n"
        "Below is a Python script with a self-contained function that solves the problem and "
        "passes corresponding tests:\n"
    )


def test_chat_template_and_raw():
    rec = Record(id=1, instruction="Hi", input="there", raw={"prompt": "P"})
    text = render_prompt("chat", rec, tokenizer=tiny_tokenizer())
    assert text == "<|im_start|>user\nHi\n\nthere<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt("raw", rec) == "P"
    with pytest.raises(SpectrumKDError, match="chat template"):
        render_prompt("chat", rec)
    with pytest.raises(SpectrumKDError, match="unknown template"):
        render_prompt("alpaca", rec)


def test_math_few_shot_from_training_split(shared_data):
    train = load_records(shared_data / "gsm8k" / "train.jsonl")
    shots = math_few_shot(train, 8, seed=0)
    assert len(shots) == 8 and len({s.id for s in shots}) == 8
    assert [s.id for s in shots] == [s.id for s in math_few_shot(train, 8, seed=0)]
    assert [s.id for s in shots] != [s.id for s in math_few_shot(train, 8, seed=1)]
