"""ROUGE-L: golden values, equality with rouge-score itself, max over references, real text."""

import json

import pytest
from rouge_score import rouge_scorer

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate import mean_rouge_l, rouge_l

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def reference_score(prediction, references):
    return 100 * max(SCORER.score(r, prediction)["rougeL"].fmeasure for r in references)


def test_golden_pair_from_rouge_score_tests():
    # "testing one two" vs "testing one": P = 1, R = 2/3, F = 4/5
    s = SCORER.score("testing one", "testing one two")["rougeL"]
    assert (s.precision, s.recall) == pytest.approx((2 / 3, 1.0))
    assert rouge_l(prediction="testing one", references=["testing one two"]) == pytest.approx(80.0)
    assert rouge_l(prediction="testing one two", references=["testing one"]) == pytest.approx(80.0)


@pytest.mark.parametrize(
    ("prediction", "references"),
    [
        ("The quick brown fox jumps", ["the fox jumped quickly over"]),
        ("Running runners ran!", ["run, runner, running"]),
        ("Café déjà vu 42", ["cafe deja vu 42"]),  # non-ASCII dropped by rouge-score's tokenizer
        ("", ["something"]),
        ("a b c d e", ["e d c b a", "a b x d e"]),
        ("Paris is the capital of France.", ["The capital of France is Paris", "Paris"]),
    ],
)
def test_equals_rouge_score(prediction, references):
    assert rouge_l(prediction=prediction, references=references) == pytest.approx(
        reference_score(prediction, references), abs=1e-12
    )


def test_max_over_references_and_string_reference():
    refs = ["completely different words", "the cat sat on the mat"]
    assert rouge_l(prediction="the cat sat on the mat", references=refs) == pytest.approx(100.0)
    assert rouge_l(prediction="x", references="x") == pytest.approx(100.0)


def test_bad_inputs():
    with pytest.raises(SpectrumKDError):
        rouge_l(prediction="a", references=[])
    with pytest.raises(SpectrumKDError):
        rouge_l(prediction=None, references=["a"])
    with pytest.raises(SpectrumKDError):
        mean_rouge_l(["a"], [["a"], ["b"]])


def test_real_generations_file(shared_data, tmp_path):
    """A real SmolLM2-135M-Instruct generations file (20 DollyEval answers, seed 10): the stored
    scores are recomputed by rouge-score directly against the real references."""
    from pathlib import Path

    gen = Path(__file__).parent / "data" / "smollm2_dolly_seed10.jsonl"
    rows = [json.loads(line) for line in gen.read_text().splitlines()[1:]]
    refs = [json.loads(line)["output"] for line in (shared_data / "dolly" / "valid.jsonl").open()]
    assert len(rows) == 20
    for index, row in enumerate(rows):
        assert row["id"] == f"dolly-{index + 1}"
        expected = reference_score(row["prediction"], [refs[index]])
        assert row["score"] == pytest.approx(expected, abs=1e-9)
        assert rouge_l(prediction=row["prediction"], references=[refs[index]]) == pytest.approx(expected)


def test_sinst_multiple_references(shared_data):
    rows = [json.loads(line) for _, line in zip(range(50), (shared_data / "sinst" / "valid.jsonl").open())]
    multi = [r for r in rows if len(r["output"]) > 1] or rows
    for row in multi[:10]:
        prediction = row["output"][-1] + " extra words"
        assert rouge_l(prediction=prediction, references=row["output"]) == pytest.approx(
            reference_score(prediction, row["output"])
        )
