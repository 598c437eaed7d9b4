"""Every reader turns bad bytes into one line naming the file and line (issue 11 probes).

Non-UTF-8 text, gzip files that are cut short or are not gzip, JSON that does not parse: the
shared readers (:mod:`spectrumkd.jsonl`, :mod:`spectrumkd.fileio`) and each command on top of
them answer with one ``spectrumkd CMD: error: FILE:LINE: ...`` line and exit status 2.
"""

from __future__ import annotations

import gzip
import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.curriculum import Plan
from spectrumkd.fileio import atomic_write_text, read_json, read_text
from spectrumkd.jsonl import iter_jsonl

GOOD = b'{"id": "a", "score": 1.0}\n{"id": "b", "score": 2.0}\n'
BAD_FILES = {
    "not-utf8.jsonl": (b'{"id": "a", "score": 1.0}\n{"id": "\xff", "score": 2.0}\n',
                       "not-utf8.jsonl:2: not UTF-8"),
    "cut.jsonl.gz": (gzip.compress(GOOD * 40)[:30], "cut.jsonl.gz:1: gzip data cut short"),
    "plain.jsonl.gz": (GOOD, "plain.jsonl.gz:1: not a gzip file"),
    "broken.jsonl": (b'{"id": "a", "score": 1.0}\n{"id": "b", \n', "broken.jsonl:2: not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_jsonl_reader_errors_name_file_and_line(tmp_path, name):
    content, needle = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SpectrumKDError, match=needle.replace(".", r"\.")) as exc:
        list(iter_jsonl(tmp_path / name))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_plan_command_gives_one_line(tmp_path, capsys, name):
    content, needle = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    rc = main(["plan", "--scores", str(tmp_path / name), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "p.json").exists()


def test_plan_command_refuses_huge_scores_before_a_plan_exists(tmp_path, capsys):
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(json.dumps({"id": f"x{i}", "score": s}) + "\n"
                              for i, s in enumerate([1e308, 1e308, 1.0, 2.0])))
    rc = main(["plan", "--scores", str(scores), "--out", str(tmp_path / "p.json"),
               "--epochs", "4", "--warmup", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "too large" in err[0] and "'x0', 'x1'" in err[0]
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--buckets", "0", "--baseline", "babystep"], "--buckets: expected a positive integer"),
    (["--out-dir"], "is a directory"),
])
def test_plan_command_argument_errors_are_one_line(tmp_path, capsys, args, needle):
    scores = tmp_path / "s.jsonl"
    scores.write_bytes(GOOD)
    out = ["--out", str(tmp_path)] if args == ["--out-dir"] else ["--out", str(tmp_path / "p.json")]
    extra = [] if args == ["--out-dir"] else args
    try:
        rc = main(["plan", "--scores", str(scores), *out, "--epochs", "2", *extra])
    except SystemExit as exc:  # argparse's own one-line error
        rc = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_plan_load_and_read_json_name_the_file(tmp_path):
    p = tmp_path / "plan.json"
    p.write_bytes(b'{"n_total": 2,\n "params": "\xff"}')
    with pytest.raises(SpectrumKDError, match=r"plan\.json:2: not UTF-8"):
        Plan.load(p)
    with pytest.raises(SpectrumKDError, match=r"plan\.json:2: not UTF-8"):
        read_json(p)
    with pytest.raises(SpectrumKDError, match="not found"):
        read_text(tmp_path / "nope.json")
    with pytest.raises(SpectrumKDError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    assert read_json(atomic_write_text(tmp_path / "ok.json", '{"a": 1}')) == {"a": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ok.json", "plan.json"]  # no temp files
