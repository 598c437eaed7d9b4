"""Issue 20 probes of ``eval`` and ``compare``: data that would give silent wrong results.

A HumanEval (or MBPP) task whose test code does not parse would count every sample as failed:
the data is refused. A resumed generations row edited to a NaN or ``true`` score would flow into
the set's metric: refused. A full disk while ``compare`` writes is one line, exit 2.
"""

from __future__ import annotations

import errno
import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.evaluate.results import append_rows, generations_header, read_generations
from spectrumkd.evaluate.sets import load_file

TASK = {"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f",
        "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n"}


@pytest.mark.parametrize(("change", "needle"), [
    ({"test": "def check(c):\n    assert c( == 1\n"}, "test code does not parse (line 2)"),
    ({"test": "x = 1\0"}, "test code does not parse"),
    ({"entry_point": "f; import os"}, "is not a name"),
])
def test_humaneval_task_that_cannot_run_is_refused(tmp_path, change, needle):
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(TASK) + "\n" + json.dumps({**TASK, "task_id": "HumanEval/1",
                                                          **change}) + "\n")
    with pytest.raises(SpectrumKDError, match="he.jsonl:2: .*" + needle.replace("(", r"\(")
                       .replace(")", r"\)")):
        load_file(path, name="humaneval", suite="code")
    path.write_text(json.dumps(TASK) + "\n")
    assert load_file(path, name="humaneval", suite="code").items[0].id == "HumanEval/0"


def test_mbpp_tests_that_do_not_parse_are_refused(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps({"task_id": 1, "text": "t", "test_list": ["assert f(]"]}) + "\n")
    with pytest.raises(SpectrumKDError, match="does not parse"):
        load_file(path, name="mbpp", suite="code")


@pytest.mark.parametrize("score", [float("nan"), True, "90", float("inf")])
def test_resumed_rows_with_a_bad_score_are_refused(tmp_path, score):
    header = generations_header(suite="instruct", set="dolly", seed=10, model_fingerprint="m",
                                data_fingerprint="d", settings={})
    path = tmp_path / "seed10.jsonl"
    append_rows(path, header, [{"id": "a", "prediction": "x", "score": 40.0},
                               {"id": "b", "prediction": "y", "score": score}])
    with pytest.raises(SpectrumKDError, match="seed10.jsonl:3: score .* is not a finite number"):
        read_generations(path, header)


def test_disk_full_while_compare_writes_is_one_line(tmp_path, capsys, monkeypatch):
    from test_compare_guards import make_run

    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("spectrumkd.evaluate.compare.atomic_write_text", full)
    rc = main(["compare", str(a), str(b), "--out", str(tmp_path / "c.md")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert "c.md" in lines[0] and "free some space" in lines[0]
