"""Math: gold GSM8K solutions score 100%, shuffled ones near 0%; extraction on MATH-style answers."""

import json
import random

import pytest

from spectrumkd.evaluate import math as m
from spectrumkd.evaluate.sets import load_set


@pytest.fixture(scope="module")
def gsm8k(shared_data):
    return load_set("gsm8k", "math", data=shared_data / "gsm8k" / "test.jsonl")


def test_gold_solutions_score_100(gsm8k):
    refs = [item.references[0] for item in gsm8k.items]
    rows = m.score_predictions(refs, refs)
    assert len(rows) == 1319
    assert all(r["correct"] for r in rows), [r for r in rows if not r["correct"]][:3]


def test_shuffled_solutions_score_near_zero(gsm8k):
    refs = [item.references[0] for item in gsm8k.items]
    shuffled = refs[:]
    random.Random(0).shuffle(shuffled)
    accuracy = sum(r["correct"] for r in m.score_predictions(shuffled, refs)) / len(refs)
    assert accuracy < 0.05


def test_gold_answers_are_integers_after_normalisation(gsm8k):
    # GSM8K golds like "#### 1,000" must normalise to plain numbers
    for item in gsm8k.items:
        assert m._as_number(m.extract_answer(item.references[0])) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # real MATH solution endings
        (r"Thus, the answer is $\boxed{\frac{211}{243}}$.", r"\frac{211}{243}"),
        (r"so the area is $\pi r^2 = \boxed{63\pi}$.", r"63\pi"),
        (r"the maximum value of $|x| + |y|$ is $\boxed{\sqrt{2}}.$", r"\sqrt{2}"),
        (r"The solution set is $\boxed{\left( -\infty, -5 \right) \cup (-5,5)}$.",
         r"(-\infty,-5)\cup(-5,5)"),
        (r"$\boxed{\begin{pmatrix} 2 \\ -1 \end{pmatrix}}$", r"\begin{pmatrix}2\\-1\end{pmatrix}"),
        (r"The angle is $\boxed{90^\circ}$.", "90"),
        (r"It costs $\boxed{\$1,\!250.00}$", "1250"),
        (r"which gives $\boxed{\dfrac{3}{4}}$", r"\frac{3}{4}"),
        (r"\boxed{\tfrac12}", r"\frac{1}{2}"),
        (r"So $x = \boxed{5\text{ cm}}$", "5"),
        (r"first \boxed{1} then \boxed{\frac{a^{2}}{b_{1}}}", r"\frac{a^{2}}{b_{1}}"),
        (r"the answer is $\boxed 7$.", "7"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("She needs 20% more, so 15.", "15"),
        ("no numbers at all", ""),
    ],
)
def test_extract_answer(text, expected):
    assert m.extract_answer(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("0.5", r"\frac{1}{2}", True),
        (r"\dfrac{6}{8}", "3/4", True),
        ("1,000", "1000", True),
        ("10%", "10", True),
        (r"\$18.00", "18", True),
        ("18", "19", False),
        (r"\sqrt{2}", r"\sqrt{3}", False),
    ],
)
def test_answers_match(a, b, same):
    assert m.answers_match(m.normalize_answer(a), m.normalize_answer(b)) is same


def test_prompts_follow_figure7():
    prompt = m.build_prompt("What is 2+2?", "gsm8k")
    assert prompt.count("### Problem:") == 9 and prompt.count("### Solution:") == 9
    assert prompt.endswith("What is 2+2?\n" + m.INSTRUCTION_SUFFIX + "\n\n### Solution:\n")
    assert prompt.startswith("### Problem:\nThere are 15 trees in the grove.")
    assert m.build_prompt("x", "math").count("### Problem:") == 5
    assert m.build_prompt("x", "math", shots=0) == m.render_problem("x")


def test_math_items_from_hub_style_rows(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problem": "1/2+1/4?", "solution": r"$\boxed{\frac34}$",
                                "answer": r"\frac{3}{4}"}) + "\n")
    item = load_set("math", "math", data=path).items[0]
    rows = m.score_predictions([r"so \boxed{0.75}"], list(item.references), [item.extra["answer"]])
    assert rows[0]["correct"]
