r"""Math reasoning evaluation: the Figure 7 few-shot prompt, answer extraction, pass@1.

Prompt (the paper's Figure 7, after Qwen2.5-Math's evaluation): the few-shot demonstrations and
then the problem, each rendered as ::

    ### Problem:
    {problem}
    Please reason step by step, and put your final answer within \boxed{}.

    ### Solution:
    {solution}

joined by a blank line. GSM8K uses 8 shots and MATH 4, the first 8 / 4 of Qwen2.5-Math's
standard examples (``evaluation/examples.py``: the chain-of-thought GSM8K exemplars of Wei et
al. 2022, and Minerva-style MATH exemplars); generation stops at the next ``### Problem``.

Extraction (:func:`extract_answer`, in the order Qwen2.5-Math's ``parser.py`` uses): the content
of the last ``\boxed{...}`` (nested braces balanced, also ``\boxed 5``), else the text after
the last "the answer is", else GSM8K's ``#### n``, else the last number. Normalisation
(:func:`normalize_answer`): ``\dfrac``/``\tfrac`` → ``\frac``, ``\left``/``\right``, ``\!``,
``\text{...}`` units at the end, ``^\circ``, ``\$``, ``\%``, thousands commas, a trailing period,
``x =`` prefixes, ``\frac12`` → ``\frac{1}{2}``, ``a/b`` → ``\frac{a}{b}``, ``5.0`` → ``5``.
Two answers are equal (:func:`answers_match`) when their normal forms are identical, or both
evaluate to the same number (plain numbers, ``\frac{a}{b}``, percentages). Symbolic equivalence
(sympy / latex2sympy, as in Qwen2.5-Math's ``grader.py``) is NOT attempted: e.g. ``\sqrt{2}/2``
and ``\frac{\sqrt2}{2}`` count as different here.

References: Cobbe et al. 2021 (GSM8K); Hendrycks et al. 2021 (MATH); Yang et al. 2024
(Qwen2.5-Math) github.com/QwenLM/Qwen2.5-Math ``evaluation/``; the paper Figure 7 and §C.4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from spectrumkd import SpectrumKDError

INSTRUCTION_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
STOP_STRINGS = ("### Problem", "\n\n\n")

# Qwen2.5-Math's standard few-shot examples ("gsm8k": 8 CoT exemplars of Wei et al. 2022;
# "math": Minerva-style exemplars, of which 4-shot uses the first four).
GSM8K_SHOTS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers "
        "plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
        "the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
        "have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = "
        "74. After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
        "many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave "
        "Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
        "many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 "
        "more toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each "
        "day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
        "more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
        "has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)
MATH_SHOTS: tuple[tuple[str, str], ...] = (
    (
        "Kevin Kangaroo begins hopping on a number line at 0. He wants to get to 1, but he can "
        "hop only $\\frac{1}{3}$ of the distance. Each hop tires him out so that he continues "
        "to hop $\\frac{1}{3}$ of the remaining distance. How far has he hopped after five "
        "hops? Express your answer as a common fraction.",
        "Let's think step by step\nKevin hops $1/3$ of the remaining distance with every hop.\n"
        "His first hop takes $1/3$ closer.\nFor his second hop, he has $2/3$ left to travel, so "
        "he hops forward $(2/3)(1/3)$.\nFor his third hop, he has $(2/3)^2$ left to travel, so "
        "he hops forward $(2/3)^2(1/3)$.\nIn general, Kevin hops forward $(2/3)^{k-1}(1/3)$ on "
        "his $k$th hop.\nWe want to find how far he has hopped after five hops.\nThis is a "
        "finite geometric series with first term $1/3$, common ratio $2/3$, and five terms.\n"
        "Thus, Kevin has hopped $\\frac{\\frac{1}{3}\\left(1-\\left(\\frac{2}{3}\\right)^5"
        "\\right)}{1-\\frac{2}{3}} = \\boxed{\\frac{211}{243}}$.\nThe answer is \\frac{211}{243}",
    ),
    (
        "What is the area of the region defined by the equation $x^2+y^2 - 7 = 4y-14x+3$?",
        "Let's think step by step\nWe rewrite the equation as $x^2 + 14x + y^2 - 4y = 10$ and "
        "then complete the square,\nresulting in  $(x+7)^2-49 + (y-2)^2-4=10$,\nor "
        "$(x+7)^2+(y-2)^2=63$.\nThis is the equation of a circle with center $(-7, 2)$ and "
        "radius $\\sqrt{63},$\nso the area of this region is $\\pi r^2 = \\boxed{63\\pi}$.\n"
        "The answer is 63\\pi",
    ),
    (
        "If $x^2+y^2=1$, what is the largest possible value of $|x|+|y|$?",
        "Let's think step by step\nIf $(x,y)$ lies on the circle,\nso does $(x,-y),$ $(-x,-y),$ "
        "and $(-x,-y),$ (which all give the same value of $|x| + |y|$),\nso we can assume that "
        "$x \\ge 0$ and $y \\ge 0.$\nThen $|x| + |y| = x + y.$  Squaring, we get\n\\[(x + y)^2 "
        "= x^2 + 2xy + y^2 = 1 + 2xy.\\]\nNote that $(x - y)^2 \\ge 0.$\nExpanding, we get "
        "$x^2 - 2xy + y^2 \\ge 0,$ so $2xy \\le x^2 + y^2 = 1.$\nHence,\\[1 + 2xy \\le 2,\\]which "
        "means $x + y \\le \\sqrt{2}.$\nEquality occurs when $x = y = \\frac{1}{\\sqrt{2}},$\nso "
        "the maximum value of $|x| + |y|$ is $\\boxed{\\sqrt{2}}.$\nThe answer is \\sqrt{2}",
    ),
    (
        "If $f(x)=\\frac{ax+b}{cx+d}, abcd\\not=0$ and $f(f(x))=x$ for all $x$ in the domain of "
        "$f$, what is the value of $a+d$?",
        "Let's think step by step\nThe condition $f(f(x))$ means that $f$ is the inverse of "
        "itself,\nso its graph is symmetrical about the line $y = x$.\nWith a rational function "
        "of this form, we will have two asymptotes:\na vertical one at $x=-d/c$ if $cx+d$ does "
        "not divide $ax+b$,\nand a horizontal one at $y=a/c$,\nif we take the limit of $f(x)$ "
        "as $x$ goes to $\\pm\\infty$.\nIn order for $f$ to be its own inverse, the "
        "intersection of the asymptotes must lie on the line $y=x$\nso that it and its "
        "asymptotes reflect onto themselves.\nThis means that $-d/c=a/c$,\nand therefore "
        "$-d=a$ and $a+d=\\boxed{0}$.\nThe answer is 0",
    ),
)
SHOTS = {"gsm8k": (GSM8K_SHOTS, 8), "math": (MATH_SHOTS, 4)}


def render_problem(problem: str, solution: str = "") -> str:
    r"""One Figure 7 block; with ``solution=""`` it ends at ``### Solution:\n`` for generation.

    >>> print(render_problem("1+1?", "2"))
    ### Problem:
    1+1?
    Please reason step by step, and put your final answer within \boxed{}.
    <BLANKLINE>
    ### Solution:
    2
    """
    return f"### Problem:\n{problem}\n{INSTRUCTION_SUFFIX}\n\n### Solution:\n{solution}"


def build_prompt(problem: str, set_name: str, *, shots: int | None = None) -> str:
    """The full few-shot prompt for ``problem`` (8 shots for gsm8k, 4 for math by default)."""
    if set_name not in SHOTS:
        raise SpectrumKDError(f"no few-shot examples for set {set_name!r}; use gsm8k or math")
    examples, default = SHOTS[set_name]
    n = default if shots is None else shots
    if not 0 <= n <= len(examples):
        raise SpectrumKDError(f"{set_name} has {len(examples)} few-shot examples, asked for {n}")
    demos = [render_problem(q, a) for q, a in examples[:n]]
    return "\n\n".join([*demos, render_problem(problem)])


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (balanced nested braces) or ``\boxed x``; else None.

    >>> last_boxed(r"so $\boxed{\frac{1}{2}}$ and then \boxed{\dfrac{a}{b^{2}}}.")
    '\\dfrac{a}{b^{2}}'
    >>> last_boxed(r"\boxed 5$") , last_boxed("no box")
    ('5', None)
    """
    starts = [(text.rfind(cmd), cmd) for cmd in ("\\boxed", "\\fbox")]
    at, cmd = max(starts)
    if at == -1:
        return None
    rest = text[at + len(cmd):]
    if rest.startswith("{"):
        depth = 0
        for index, char in enumerate(rest):
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return rest[1:index]
        return None  # unbalanced: no answer
    match = re.match(r"\s+([^\s$]+)", rest)
    return match.group(1) if match else None


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def extract_answer(text: str) -> str:
    r"""The final answer in a solution text, normalised (see the module docstring); ``""`` if none.

    >>> extract_answer("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18")
    '18'
    >>> extract_answer(r"Thus the answer is $\boxed{\dfrac{211}{243}}$.")
    '\\frac{211}{243}'
    >>> extract_answer("5 * 4 = 20 computers. 9 + 20 is 29. The answer is 29.")
    '29'
    >>> extract_answer("It costs 1,250 dollars in total")
    '1250'
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return normalize_answer(boxed)
    lowered = text.lower()
    if "he answer is" in lowered:
        tail = text[lowered.rfind("he answer is") + len("he answer is"):]
        tail = tail.strip().lstrip(":").strip()
        tail = tail.split("\n")[0]
        return normalize_answer(tail)
    match = re.search(r"####\s*(.+)", text)
    if match:
        return normalize_answer(match.group(1).strip())
    numbers = re.findall(_NUMBER, text)
    return normalize_answer(numbers[-1]) if numbers else ""


def _fix_fracs(text: str) -> str:
    r"""``\frac12`` → ``\frac{1}{2}``, ``\frac1{7}`` → ``\frac{1}{7}``."""
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)
    return re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", text)


def normalize_answer(answer: str) -> str:
    r"""A canonical string form of an answer (LaTeX and number formatting removed).

    >>> normalize_answer(r"\$1,000.00")
    '1000'
    >>> normalize_answer(r"\dfrac12")
    '\\frac{1}{2}'
    >>> normalize_answer(r"90^\circ"), normalize_answer(r"5\text{ cm}"), normalize_answer("x = 3.")
    ('90', '5', '3')
    >>> normalize_answer("3/4"), normalize_answer(r"\left( 1, 2 \right)")
    ('\\frac{3}{4}', '(1,2)')
    """
    text = str(answer).strip().replace("\n", " ")
    text = text.strip("$ ").rstrip(".").strip()
    text = re.sub(r"(?<!\\)\\[!,;]", "", text)  # thin spaces \! \, \; (not a "\\" newline)
    text = re.sub(r"(?<!\\)\\ ", " ", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    text = text.replace("\\$", "").replace("$", "")
    text = text.replace("\\%", "").replace("%", "")
    stripped = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}\s*$", "", text).strip()
    if stripped:  # a unit at the end: "5 \text{ cm}" → "5"
        text = stripped
    text = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"^[a-zA-Z]\s*=\s*", "", text)  # "x = 3" → "3"
    text = re.sub(r"(\d),(?=\d{3}(?!\d))", r"\1", text)  # thousands separators
    text = re.sub(r"\s+(?:dollars?|cents?|units?|cm|m|km|inches|feet|hours?|minutes?|days?)$",
                  "", text)
    text = text.replace(" ", "")
    text = _fix_fracs(text)
    if re.fullmatch(r"-?\d+/\d+", text):
        num, den = text.split("/")
        text = f"\\frac{{{num}}}{{{den}}}"
    text = re.sub(r"(\d+)\.0+(?!\d)", r"\1", text)  # 5.00 → 5
    text = re.sub(r"(\d+\.\d*?[1-9])0+(?!\d)", r"\1", text)  # 2.50 → 2.5
    if text.startswith("."):
        text = "0" + text
    return text.rstrip(".")


def _as_number(text: str) -> Fraction | None:
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
    try:
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) else value
        if re.fullmatch(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(prediction: str, reference: str) -> bool:
    r"""Whether two *normalised* answers are the same (string or numeric equality).

    >>> answers_match(normalize_answer("0.5"), normalize_answer(r"\frac{1}{2}"))
    True
    >>> answers_match("18", "19"), answers_match("", "")
    (False, False)
    """
    if not prediction or not reference:
        return False
    if prediction == reference:
        return True
    a, b = _as_number(prediction), _as_number(reference)
    if a is not None and b is not None:
        return abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))
    return False


def gold_answer(reference: str, answer: str | None = None) -> str:
    """The normalised gold answer: MATH-500's ``answer`` field, else extracted from the solution."""
    return normalize_answer(answer) if answer else extract_answer(reference)


def score_predictions(
    predictions: Sequence[str], references: Sequence[str], answers: Sequence[str | None] = ()
) -> list[dict]:
    """Per-example ``{"extracted", "gold", "correct"}`` for predictions vs reference solutions."""
    if len(predictions) != len(references):
        raise SpectrumKDError(f"{len(predictions)} predictions for {len(references)} references")
    answers = list(answers) or [None] * len(references)
    rows = []
    for prediction, reference, answer in zip(predictions, references, answers):
        extracted, gold = extract_answer(prediction), gold_answer(reference, answer)
        rows.append({"extracted": extracted, "gold": gold, "correct": answers_match(extracted, gold)})
    return rows
