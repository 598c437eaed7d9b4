"""`compare` refuses runs that are not comparable, and never prints NaN as a number.

Issue 11 probes: runs evaluated on different data or different --limit values were paired and
given a Wilcoxon p over unrelated prompts (and averages over different subsets); a NaN metric
printed "nan" with exit 0; a malformed results.json gave a traceback. Different data, no shared
ids and NaN are one-line errors (exit 2) that write nothing; a different --limit on the same file
is compared on the ids both runs have, and the table says so.
"""

from __future__ import annotations

import json
import math

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.evaluate.compare import compare_runs, render_markdown
from spectrumkd.evaluate.results import (
    append_rows,
    finish_results,
    generations_header,
    new_results,
    write_results,
)

SCORES = [10.0, 25.0, 30.0, 45.0, 50.0, 65.0]


def make_run(folder, name, scores=SCORES, *, fingerprint="sha256:d", limit=None, ids=None):
    out = folder / name
    header = generations_header(suite="instruct", set="dolly", seed=10, model_fingerprint=name,
                                data_fingerprint=fingerprint, settings={})
    ids = ids or [f"dolly-{i}" for i in range(len(scores))]
    rel = "generations/dolly/seed10.jsonl"
    append_rows(out / rel, header, [{"id": i, "prediction": "", "score": s}
                                    for i, s in zip(ids, scores)])
    results = new_results(suite="instruct", model=name, model_fingerprint=name,
                          settings={"limit": limit})
    mean = sum(scores) / len(scores) if all(map(math.isfinite, scores)) else float("nan")
    results["sets"]["dolly"] = {"metric": "rougeL", "rougeL": mean, "n": len(scores),
                                "data_fingerprint": fingerprint, "files": [rel]}
    write_results(out / "results.json", finish_results(results))
    return out


def refused(capsys, args, *needles):
    rc = main(["compare", *map(str, args)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_like_runs_compare(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", [s + 3 + i % 2 for i, s in enumerate(SCORES)])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.md")]) == 0
    assert "| b |" in capsys.readouterr().out


def test_different_data_is_refused(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", fingerprint="sha256:other")
    refused(capsys, [a, b, "--out", tmp_path / "c.md"], "different data", "data_fingerprint")
    assert not (tmp_path / "c.md").exists()


def test_a_smaller_limit_is_compared_on_the_shared_ids_only(tmp_path):
    a = make_run(tmp_path, "a")  # all 6 examples, mean 37.5
    b = make_run(tmp_path, "b", [s + 1 for s in SCORES[:3]], limit=3)
    table = compare_runs([a, b])
    assert table.restricted == {"dolly": 3} and table.n_pairs["b"] == 3
    assert table.values["a"]["dolly"] == pytest.approx(sum(SCORES[:3]) / 3)  # not 37.5
    assert table.gain["b"] == pytest.approx(100 * 1 / (sum(SCORES[:3]) / 3))
    assert "over the 3 ids all runs have" in render_markdown(table)


def test_no_shared_prompt_ids_is_refused(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", ids=[f"other-{i}" for i in range(len(SCORES))])
    refused(capsys, [a, b, "--out", tmp_path / "c.md"], "scored different examples",
            "no id in common")


def test_different_ids_without_fingerprints_are_refused(tmp_path, capsys):
    a = make_run(tmp_path, "a", fingerprint=None)
    b = make_run(tmp_path, "b", SCORES[:3], fingerprint=None)
    refused(capsys, [a, b, "--out", tmp_path / "c.md"], "no data fingerprints")


def test_nan_metric_is_an_error_not_a_printed_nan(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", [float("nan")] * len(SCORES))
    refused(capsys, [a, b, "--out", tmp_path / "c.md"], "not a finite number", "rougeL")
    assert not (tmp_path / "c.md").exists()


def test_nan_per_example_score_is_an_error(tmp_path):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b")
    path = b / "results.json"
    results = json.loads(path.read_text())
    results["sets"]["dolly"]["rougeL"] = 1.0
    path.write_text(json.dumps(results))
    gen = b / "generations/dolly/seed10.jsonl"
    gen.write_text(gen.read_text().replace('"score": 10.0', '"score": NaN'))
    with pytest.raises(SpectrumKDError, match="no finite score"):
        compare_runs([a, b])


@pytest.mark.parametrize(("content", "needle"), [
    (b"{oops", "results.json:1: not valid JSON"),
    (b'{"sets": {"dolly": 3}}', "set 'dolly' is int"),
    (b'{"sets": {"dolly": {"metric": ["x"]}}}', "no main metric"),
    (b'["not", "an", "object"]', "expected a JSON object"),
    (b'{"sets": {}, "x": "\xff"}', "not UTF-8"),
])
def test_malformed_results_json_is_one_line(tmp_path, capsys, content, needle):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_bytes(content)
    refused(capsys, [tmp_path / "bad", "--out", tmp_path / "c.md"], needle)


def test_out_that_is_a_directory_is_one_line(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    refused(capsys, [a, "--out", tmp_path], "is a directory")
