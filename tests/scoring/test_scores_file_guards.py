"""The scores file and `spectrumkd score` refuse what they cannot read or must not race.

Issue 11 probes: two `score` processes on one --out (the last writer won), an --out that is a
directory, non-UTF-8 / truncated / non-gzip inputs: each is a one-line error that writes nothing.
"""

from __future__ import annotations

import gzip
import json
import os

import pytest
from scoring_helpers import make_records

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.fileio import file_lock
from spectrumkd.scoring.scores_file import read_partial, write_complete


def one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in make_records(6, seed=1)))
    return p


def score(data, out, *extra):
    return main(["score", "--model", "tiny-random:llama?layers=1&hidden=32", "--data", str(data),
                 "--out", str(out), "--no-progress", *extra])


def test_a_second_writer_of_one_scores_file_gets_a_one_line_error(data, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    with file_lock(out):  # the first `score` process, still running
        rc = score(data, out, "--metric", "entropy")
    one_line_error(capsys, rc, "another spectrumkd process", str(out))
    assert not out.exists() and not (tmp_path / "dropped.jsonl").exists()
    assert score(data, out) == 0  # the lock is released with its holder
    assert json.loads(out.read_text().splitlines()[0])["metric"] == "ce"


def test_out_that_is_a_directory_is_a_one_line_error(data, tmp_path, capsys):
    rc = score(data, tmp_path)
    one_line_error(capsys, rc, "is a directory", str(tmp_path / "scores.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.parametrize(("content", "name", "needle"), [
    (b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "c"}\n',
     "d.jsonl", "d.jsonl:2: not UTF-8"),
    (gzip.compress(b'{"instruction": "a", "output": "b"}\n' * 50)[:40], "d.jsonl.gz",
     "d.jsonl.gz:1: gzip data cut short"),
    (b'{"instruction": "a", "output": "b"}\n', "d.jsonl.gz", "d.jsonl.gz:1: not a gzip file"),
])
def test_unreadable_data_is_a_one_line_error(tmp_path, capsys, content, name, needle):
    (tmp_path / name).write_bytes(content)
    rc = score(tmp_path / name, tmp_path / "out" / "s.jsonl")
    one_line_error(capsys, rc, needle)
    assert not (tmp_path / "out").exists()


def test_read_partial_names_file_and_line_for_bad_bytes_and_rows(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"spectrumkd": "scores"}\n{"id": "a", "score": 1.0}\n{"id": "\xfe"}\n')
    with pytest.raises(SpectrumKDError, match=r"s\.jsonl:3: not UTF-8"):
        read_partial(p)
    p.write_text('{"spectrumkd": "scores"}\n[1, 2]\n')
    with pytest.raises(SpectrumKDError, match=r"s\.jsonl:2: expected a JSON object"):
        read_partial(p)
    p.write_text('{"spectrumkd": "scores"}\n{"id": "a", "score": 1.0}\n{"id": "b", "sc')
    header, scores, torn = read_partial(p)  # a torn last line is a crash, not an error
    assert header == {"spectrumkd": "scores"} and scores == {"a": 1.0} and torn
    with pytest.raises(SpectrumKDError, match="is a directory"):
        read_partial(tmp_path)


def test_write_complete_is_atomic_and_leaves_no_temp_file(tmp_path):
    p = write_complete(tmp_path / "s.jsonl", {"spectrumkd": "scores"}, ["a", "b"], [1.0, 2.0])
    assert [json.loads(x) for x in p.read_text().splitlines()][1:] == [
        {"id": "a", "score": 1.0}, {"id": "b", "score": 2.0}]
    with pytest.raises(SpectrumKDError, match="non-finite"):
        write_complete(p, {"spectrumkd": "scores"}, ["a"], [float("nan")])
    assert sorted(os.listdir(tmp_path)) == ["s.jsonl"]
    assert json.loads(p.read_text().splitlines()[1])["score"] == 1.0  # the old file stays whole
