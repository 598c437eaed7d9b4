"""Evaluation sets: real files, ids, references, limits, errors naming the line."""

import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.sets import load_file, load_set, parse_set_names


@pytest.mark.parametrize(("name", "n"), [("dolly", 500), ("self-inst", 242), ("vicuna", 80),
                                         ("sinst", 1694)])
def test_real_instruct_sets(shared_data, name, n):
    eval_set = load_set(name, "instruct", data_root=shared_data)
    assert len(eval_set.items) == n
    item = eval_set.items[0]
    assert item.id == f"{name}-1" and item.prompt.endswith("### Response:\n") and item.references


def test_humaneval_and_gsm8k(shared_data):
    he = load_set("humaneval", "code", data_root=shared_data, limit=3)
    assert [i.id for i in he.items] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert he.items[0].extra["entry_point"] == "has_close_elements"
    assert len(load_set("gsm8k", "math", data_root=shared_data).items) == 1319


def test_rendering_and_errors(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Add.", "input": "1 and 2", "output": ["3", "three"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_file(path, name="mine", suite="instruct").items
    assert items[0].prompt.endswith("### Instruction:\nSay hi.\n\n### Response:\n")
    assert "### Input:\n1 and 2\n\n### Response:\n" in items[1].prompt
    assert items[1].references == ("3", "three")
    for bad, message in [({"instruction": "x"}, "missing references"),
                         ({"instruction": "x", "output": []}, "missing references"),
                         ({"output": "y"}, "'prompt' or an 'instruction'")]:
        path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(SpectrumKDError, match=rf"set.jsonl:2: .*{message}"):
            load_file(path, name="mine", suite="instruct")
    path.write_text("{not json\n")
    with pytest.raises(SpectrumKDError, match="set.jsonl:1: not valid JSON"):
        load_file(path, name="mine", suite="instruct")


def test_unni_is_capped_and_names_are_checked(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"i{k}", "output": "o"}) + "\n"
                            for k in range(10_005)))
    assert len(load_file(path, name="unni", suite="instruct").items) == 10_000
    assert parse_set_names("S-NI,UnNI", "instruct") == ["sinst", "unni"]
    with pytest.raises(SpectrumKDError, match="unknown instruct set"):
        parse_set_names("gsm8k", "instruct")
