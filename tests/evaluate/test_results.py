"""Generations files (resume, torn lines, header checks) and results.json; compare_runs data."""

import json

import pytest
from scipy import stats

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.compare import compare_runs, render_markdown
from spectrumkd.evaluate.results import (
    append_rows,
    finish_results,
    generations_header,
    new_results,
    read_generations,
    read_results,
    write_results,
)

HEADER = generations_header(suite="instruct", set="dolly", seed=10, model_fingerprint="m",
                            data_fingerprint="d", settings={"t": 1})


def test_append_read_and_torn_line(tmp_path):
    path = tmp_path / "g.jsonl"
    assert read_generations(path, HEADER) == []
    append_rows(path, HEADER, [{"id": "a", "score": 1.0}, {"id": "b", "score": 2.0}])
    with open(path, "a") as handle:
        handle.write('{"id": "c", "sco')
    assert [r["id"] for r in read_generations(path, HEADER)] == ["a", "b"]
    assert path.read_text().endswith('"score": 2.0}\n')  # torn line truncated away
    append_rows(path, HEADER, [{"id": "c", "score": 3.0}])
    assert [r["id"] for r in read_generations(path, HEADER)] == ["a", "b", "c"]


def test_other_run_is_refused(tmp_path):
    path = tmp_path / "g.jsonl"
    append_rows(path, HEADER, [{"id": "a", "score": 1.0}])
    other = {**HEADER, "model_fingerprint": "other"}
    with pytest.raises(SpectrumKDError, match="different run"):
        read_generations(path, other)
    path.write_text(json.dumps(HEADER) + "\nnot json\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(SpectrumKDError, match=":2: corrupt line"):
        read_generations(path, HEADER)


def _run(folder, name, scores_by_seed, metric="rougeL"):
    out = folder / name
    files = []
    for seed, scores in scores_by_seed.items():
        header = {**HEADER, "seed": seed}
        rel = f"generations/dolly/seed{seed}.jsonl"
        append_rows(out / rel, header, [{"id": f"dolly-{i}", "prediction": "", "score": s}
                                        for i, s in enumerate(scores)])
        files.append(rel)
    results = new_results(suite="instruct", model=name, model_fingerprint=name, settings={})
    per_seed = [sum(v) / len(v) for v in scores_by_seed.values()]
    results["sets"]["dolly"] = {"metric": metric, metric: sum(per_seed) / len(per_seed),
                                "n": len(next(iter(scores_by_seed.values()))), "files": files}
    write_results(out / "results.json", finish_results(results))
    return out


def test_compare_runs(tmp_path):
    base = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    a = _run(tmp_path, "base", {10: base, 20: [x + 2 for x in base]})
    better = [x + 5 + (i % 3) for i, x in enumerate(base)]
    b = _run(tmp_path, "better", {10: better, 20: better})
    table = compare_runs([a, b / "results.json"])
    assert table.runs == ["base", "better"] and table.sets == ["dolly"]
    assert table.values["base"]["dolly"] == pytest.approx(46.0)
    assert table.gain["better"] == pytest.approx(100 * (table.average["better"] - 46.0) / 46.0)
    per_example_base = [x + 1 for x in base]  # mean over the two seeds
    expected = stats.wilcoxon(better, per_example_base).pvalue
    assert table.p_value["better"] == pytest.approx(expected)
    assert table.n_pairs["better"] == 8
    text = render_markdown(table)
    assert "| better |" in text and "DollyEval (rougeL)" in text and "P. Gains (%)" in text


def test_read_results_checks(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"sets": {"x": {"metric": "pass@1"}}}))
    with pytest.raises(SpectrumKDError, match="no main metric"):
        read_results(path)
