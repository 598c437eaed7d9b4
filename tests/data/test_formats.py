"""Loading records: formats, field mapping, stable ids, errors naming file and line."""

import gzip
import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.data import load_records


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_ids_are_stem_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"instruction": "a", "output": "x"}\n\n{"instruction": "b", "output": "y"}\n')
    recs = load_records(p)
    assert [r.id for r in recs] == ["train-1", "train-3"]  # 1-based file lines, blank line kept
    assert recs[1].where.endswith("train.jsonl:3")


def test_own_id_field_keeps_its_type(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "instruction": "a", "output": "x"},
                                            {"id": "k", "instruction": "b", "output": "y"}])
    assert [r.id for r in load_records(p)] == [7, "k"]


def test_duplicate_ids_name_both_lines(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "instruction": "a", "output": "x"}] * 2)
    with pytest.raises(SpectrumKDError, match=r"d.jsonl:2: duplicate id 1 \(first at .*d.jsonl:1\)"):
        load_records(p)


def test_missing_instruction_names_file_and_line(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "x"}, {"output": "y"}])
    with pytest.raises(SpectrumKDError, match=r"d.jsonl:2: missing field 'instruction'"):
        load_records(p)


def test_invalid_json_names_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"instruction": "a", "output": "x"}\n{"instruction": \n')
    with pytest.raises(SpectrumKDError, match=r"d.jsonl:2: invalid JSON"):
        load_records(p)


def test_field_mapping_gsm8k_and_dolly_hub_names(tmp_path):
    p = _write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    r = load_records(p)[0]
    assert (r.instruction, r.output) == ("1+1?", "2\n#### 2")
    p = _write_jsonl(tmp_path / "h.jsonl", [{"instruction": "i", "context": "c", "response": "r"}])
    r = load_records(p)[0]
    assert (r.instruction, r.input, r.output) == ("i", "c", "r")
    p = _write_jsonl(tmp_path / "c.jsonl", [{"task_id": "T/0", "prompt": "def f():", "x": 1}])
    r = load_records(p, fields={"instruction": "prompt"}, id_field="task_id")
    assert (r[0].id, r[0].instruction, r[0].output) == ("T/0", "def f():", None)


def test_list_output_becomes_references(tmp_path):
    p = _write_jsonl(tmp_path / "s.jsonl", [{"instruction": "i", "output": ["a", "b"]}])
    r = load_records(p)[0]
    assert r.output is None and r.references == ["a", "b"]


def test_json_parquet_gz_and_limit(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert [r.id for r in load_records(tmp_path / "d.json", limit=2)] == ["d-1", "d-2"]
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_records(tmp_path / "z.jsonl.gz")) == 5
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    recs = load_records(tmp_path / "p.parquet")
    assert [r.id for r in recs][:2] == ["p-1", "p-2"] and recs[4].output == "a4"


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(SpectrumKDError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SpectrumKDError, match="no rows"):
        load_records(tmp_path / "e.jsonl")


def test_real_dolly_loads(shared_data):
    recs = load_records(shared_data / "dolly" / "dev.jsonl")
    assert len(recs) == 1000 and recs[0].id == "dev-1" and recs[0].output


def test_metamathqa_query_response_fields():
    from spectrumkd.data.formats import record_from_row

    rec = record_from_row({"query": "What is 2+2?", "response": "2+2=4. The answer is: 4"},
                          default_id="mm-1", where="mm:1", fields=None, id_field="id")
    assert (rec.instruction, rec.output) == ("What is 2+2?", "2+2=4. The answer is: 4")
