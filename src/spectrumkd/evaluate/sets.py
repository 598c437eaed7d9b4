"""The evaluation sets: where each lives, how its rows become prompts and references.

Instruction following (MiniLLM's protocol, the paper's Table 1): ``dolly`` (DollyEval, 500),
``self-inst`` (SelfInst, 242), ``vicuna`` (VicunaEval, 80), ``sinst`` (S-NI, the "11_" split,
responses of 11+ words, 1694) and ``unni`` (UnNI, first 10,000 rows of the "11_" split). Each
is a JSON Lines file of ``{"instruction", "input", "output", "prompt"?}``; ``output`` is a
string or a list of references. A row with a ``prompt`` field uses it as is (MiniLLM's files are
already rendered in the Figure 5 template); otherwise the Figure 5 template is rendered here.

Math: ``gsm8k`` (``question``/``answer`` with ``#### n``) and ``math`` (``problem``/``solution``
with ``\\boxed{}``). Code: ``humaneval`` (``task_id``/``prompt``/``test``/``entry_point``, also
``.jsonl.gz``) and ``mbpp`` (hub only).

Lookup order for a set name: ``--data FILE`` if given; else ``{root}/{set}/{file}`` for each
data root (``--data-root``, ``$SPECTRUMKD_DATA``, ``./data``, ``../shared/data``); else the
Hugging Face hub (``MiniLLM/dolly`` etc.; needs network and ``huggingface_hub``/``datasets``;
the hub paths are written from the MiniLLM/DistiLLM READMEs and are not exercised offline).

Not here: prompt tokenisation and truncation (``generation.py``), scoring (``rouge.py``,
``math.py``, ``code.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectrumkd import SpectrumKDError
from spectrumkd.jsonl import iter_jsonl

INSTRUCT_SETS = ("dolly", "self-inst", "vicuna", "sinst", "unni")
MATH_SETS = ("gsm8k", "math")
CODE_SETS = ("humaneval", "mbpp")
SUITE_SETS = {"instruct": INSTRUCT_SETS, "math": MATH_SETS, "code": CODE_SETS}
DEFAULT_SETS = {"instruct": INSTRUCT_SETS, "math": MATH_SETS, "code": ("humaneval",)}

ALIASES = {
    "dollyeval": "dolly",
    "selfinst": "self-inst",
    "self_inst": "self-inst",
    "vicunaeval": "vicuna",
    "s-ni": "sinst",
    "sni": "sinst",
    "uinst": "unni",
    "un-ni": "unni",
}

# Local file of each set under a data root, and its hub location (repo, file or config, split).
LOCAL_FILES = {
    "dolly": "dolly/valid.jsonl",
    "self-inst": "self-inst/valid.jsonl",
    "vicuna": "vicuna/valid.jsonl",
    "sinst": "sinst/valid.jsonl",
    "unni": "unni/valid.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
    "math": "math/test.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "mbpp": "mbpp/test.jsonl",
}
HUB_FILES = {  # MiniLLM's raw evaluation files: hf_hub_download(repo, filename)
    "dolly": ("MiniLLM/dolly", "valid.jsonl"),
    "self-inst": ("MiniLLM/self-inst", "valid.jsonl"),
    "vicuna": ("MiniLLM/Vicuna", "valid.jsonl"),
    "sinst": ("MiniLLM/sinst", "11_/valid.jsonl"),
    "unni": ("MiniLLM/uinst", "11_/valid.jsonl"),
}
HUB_DATASETS = {  # datasets.load_dataset(name, config, split=split)
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "math": ("HuggingFaceH4/MATH-500", None, "test"),
    "humaneval": ("openai/openai_humaneval", None, "test"),
    "mbpp": ("google-research-datasets/mbpp", "full", "test"),
}
ROW_LIMITS = {"unni": 10_000}  # MiniLLM evaluates the first 10k rows of UnNI's "11_" split

FIGURE5_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
FIGURE5_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation example: a stable ``id``, the rendered ``prompt`` and gold ``references``.

    ``extra`` keeps set-specific fields (HumanEval's ``test``/``entry_point``, GSM8K's answer).
    """

    id: str
    prompt: str
    references: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSet:
    """A loaded set: its canonical ``name``, ``source`` (path or hub name), ``fingerprint``."""

    name: str
    source: str
    fingerprint: str
    items: list[EvalItem]


def canonical_name(name: str) -> str:
    """Canonical set name for a user-typed one.

    >>> canonical_name("S-NI"), canonical_name("dolly")
    ('sinst', 'dolly')
    """
    key = name.strip().lower()
    return ALIASES.get(key, key)


def parse_set_names(text: str | None, suite: str) -> list[str]:
    """``"dolly,self-inst"`` → canonical names, checked against the suite; ``None`` → defaults.

    >>> parse_set_names("dolly, vicuna", "instruct")
    ['dolly', 'vicuna']
    >>> parse_set_names(None, "code")
    ['humaneval']
    """
    if suite not in SUITE_SETS:
        raise SpectrumKDError(f"unknown suite {suite!r}; choose from {sorted(SUITE_SETS)}")
    if text is None:
        return list(DEFAULT_SETS[suite])
    names = [canonical_name(part) for part in text.split(",") if part.strip()]
    for name in names:
        if name not in SUITE_SETS[suite]:
            raise SpectrumKDError(
                f"unknown {suite} set {name!r}; choose from {', '.join(SUITE_SETS[suite])}"
            )
    if not names:
        raise SpectrumKDError("--sets is empty")
    return names


def default_data_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``{set}/valid.jsonl`` etc., in order (see the module docstring)."""
    roots: list[Path] = []
    if data_root is not None:
        roots.append(Path(data_root))
    if os.environ.get("SPECTRUMKD_DATA"):
        roots.append(Path(os.environ["SPECTRUMKD_DATA"]))
    roots += [Path("data"), Path("..") / "shared" / "data"]
    return roots


def file_fingerprint(path: str | os.PathLike) -> str:
    """``sha256:`` of a file's bytes (data files are small enough to hash whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line of a JSONL or JSONL.gz file."""
    return iter_jsonl(path)


def _references(row: dict, where: str, key: str = "output") -> tuple[str, ...]:
    value = row.get(key)
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise SpectrumKDError(
            f"{where}: missing references (field {key!r} must be a string or a non-empty list "
            "of strings)"
        )
    return tuple(refs)


def instruct_item(row: dict, item_id: str, where: str) -> EvalItem:
    """An instruction-following item: the row's ``prompt`` or the Figure 5 rendering."""
    refs = _references(row, where)
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        instruction = row.get("instruction")
        if not isinstance(instruction, str):
            raise SpectrumKDError(f"{where}: needs a 'prompt' or an 'instruction' string")
        extra_input = row.get("input") or ""
        template = FIGURE5_WITH_INPUT if extra_input else FIGURE5_NO_INPUT
        prompt = template.format(instruction=instruction, input=extra_input)
    question = row.get("instruction") or prompt
    if row.get("input"):
        question = f"{question}\n\n{row['input']}"
    return EvalItem(id=item_id, prompt=prompt, references=refs, extra={"question": question})


def math_item(row: dict, item_id: str, where: str) -> EvalItem:
    """A math item: ``question``/``answer`` (GSM8K) or ``problem``/``solution``/``answer`` (MATH)."""
    question = row.get("question", row.get("problem"))
    if not isinstance(question, str):
        raise SpectrumKDError(f"{where}: needs a 'question' or 'problem' string")
    solution = row.get("answer") if "question" in row else row.get("solution", row.get("answer"))
    if not isinstance(solution, str) or not solution.strip():
        raise SpectrumKDError(f"{where}: missing the reference answer/solution")
    extra = {"question": question}
    if isinstance(row.get("answer"), str) and "solution" in row:
        extra["answer"] = row["answer"]  # MATH-500 carries the final answer separately
    return EvalItem(id=item_id, prompt=question, references=(solution,), extra=extra)


def _check_test_code(test: str, where: str) -> None:
    """Refuse a task whose test code does not parse: every sample would count as failed."""
    import ast

    try:
        ast.parse(test)
    except (SyntaxError, ValueError, RecursionError) as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise SpectrumKDError(f"{where}: the test code does not parse{line}: "
                              f"{type(exc).__name__}; fix or remove the task") from None


def code_item(row: dict, item_id: str, where: str) -> EvalItem:
    """A code item: HumanEval's ``prompt``/``test``/``entry_point`` or MBPP's ``text``/tests."""
    if "entry_point" in row:
        for key in ("prompt", "test", "entry_point"):
            if not isinstance(row.get(key), str):
                raise SpectrumKDError(f"{where}: HumanEval row needs a {key!r} string")
        if not row["entry_point"].isidentifier():
            raise SpectrumKDError(f"{where}: entry_point {row['entry_point']!r:.60} is not a name")
        _check_test_code(row["test"], where)
        extra = {"test": row["test"], "entry_point": row["entry_point"], "kind": "humaneval"}
        solution = row.get("canonical_solution", "")
        return EvalItem(id=item_id, prompt=row["prompt"], references=(solution,), extra=extra)
    text = row.get("text", row.get("prompt"))
    tests = row.get("test_list")
    if not isinstance(text, str) or not isinstance(tests, list):
        raise SpectrumKDError(f"{where}: MBPP row needs 'text' and 'test_list'")
    setup = row.get("test_setup_code", "") or ""
    test = setup + "\n" + "\n".join(tests) + "\n"
    _check_test_code(test, where)
    prompt = f"{text}\nYour code should pass these tests:\n" + "\n".join(tests)
    extra = {"test": test, "entry_point": None, "kind": "mbpp"}
    return EvalItem(id=item_id, prompt=prompt, references=(row.get("code", ""),), extra=extra)


ITEM_BUILDERS = {"instruct": instruct_item, "math": math_item, "code": code_item}


def load_file(
    path: str | os.PathLike, *, name: str, suite: str, limit: int | None = None
) -> EvalSet:
    """Read a local JSONL(.gz) evaluation file into an :class:`EvalSet`.

    Ids: the row's ``task_id``/``id`` if present, else ``"{name}-{line}"``. ``limit`` keeps the
    first rows (and UnNI is always cut to its first 10,000 rows, as MiniLLM does).
    """
    build = ITEM_BUILDERS[suite]
    caps = [x for x in (limit, ROW_LIMITS.get(name)) if x is not None]
    cap = min(caps) if caps else None
    items: list[EvalItem] = []
    seen: set[str] = set()
    for line_no, row in read_rows(path):
        if cap is not None and len(items) >= cap:
            break
        raw_id = row.get("task_id", row.get("id"))
        item_id = str(raw_id) if raw_id is not None else f"{name}-{line_no}"
        where = f"{path}:{line_no}"
        if item_id in seen:
            raise SpectrumKDError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        items.append(build(row, item_id, where))
    if not items:
        raise SpectrumKDError(f"{path}: no examples")
    return EvalSet(name=name, source=str(path), fingerprint=file_fingerprint(path), items=items)


def _hub_rows(name: str) -> tuple[str, list[dict]]:  # pragma: no cover - needs the network
    if name in HUB_FILES:
        repo, filename = HUB_FILES[name]
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise SpectrumKDError(f"set {name!r} not found locally and huggingface_hub is "
                                  "not installed") from exc
        path = hf_hub_download(repo, filename, repo_type="dataset")
        return path, [row for _, row in read_rows(path)]
    repo, config, split = HUB_DATASETS[name]
    try:
        import datasets
    except ImportError as exc:
        raise SpectrumKDError(f"set {name!r} not found locally and `datasets` is not "
                              "installed") from exc
    data = datasets.load_dataset(repo, config, split=split)
    return f"hf://{repo}" + (f"/{config}" if config else "") + f":{split}", list(data)


def load_set(
    name: str,
    suite: str,
    *,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
) -> EvalSet:
    """Load set ``name`` of ``suite`` from ``data``, a data root, or the hub (module docstring)."""
    name = canonical_name(name)
    if data is not None and str(data).startswith("spectrumkd:"):  # a file shipped in the package
        from spectrumkd.data.formats import PACKAGED_PREFIX, packaged_data

        data = packaged_data(str(data)[len(PACKAGED_PREFIX):])
    if data is not None:
        return load_file(data, name=name, suite=suite, limit=limit)
    for root in default_data_roots(data_root):
        candidate = root / LOCAL_FILES[name]
        if candidate.is_file():
            return load_file(candidate, name=name, suite=suite, limit=limit)
    source, rows = _hub_rows(name)  # pragma: no cover - needs the network
    return _from_rows(rows, name=name, suite=suite, source=source, limit=limit)  # pragma: no cover


def _from_rows(
    rows: Sequence[dict], *, name: str, suite: str, source: str, limit: int | None
) -> EvalSet:
    cap = [x for x in (limit, ROW_LIMITS.get(name)) if x is not None]
    rows = list(rows)[: min(cap)] if cap else list(rows)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    build = ITEM_BUILDERS[suite]
    items = []
    for index, row in enumerate(rows, start=1):
        raw_id = row.get("task_id", row.get("id"))
        item_id = str(raw_id) if raw_id is not None else f"{name}-{index}"
        items.append(build(row, item_id, f"{source} row {index}"))
    return EvalSet(name=name, source=source, fingerprint="sha256:" + digest, items=items)
