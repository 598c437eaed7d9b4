import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import Plan, make_plan, read_scores


def test_json_layout_matches_design(tmp_path):
    plan = make_plan("spectrumkd", [3, 1, 2, 7, 5, 6, 4, 8, 9, 10], [float(i) for i in range(10)],
                     epochs=3, warmup=0)
    path = plan.save(tmp_path / "plan.json")
    obj = json.loads(path.read_text())
    assert obj["spectrumkd"] == "plan" and obj["n_total"] == 10
    assert set(obj["zones"]) == {"early", "continuous", "late", "excluded"}
    e = obj["epochs"][0]
    assert set(e) == {"epoch", "start", "ids", "temperature", "total_difficulty"}
    assert all(isinstance(i, int) for i in e["ids"])  # ids keep their type
    assert Plan.load(path) == plan


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda o: o.pop("spectrumkd"), "not a spectrumkd plan"),
        (lambda o: o["epochs"][0].__setitem__("ids", [999]), "ids not in any zone"),
        (lambda o: o["epochs"][0].__setitem__("temperature", -1), "temperature"),
        (lambda o: o["epochs"][1].__setitem__("epoch", 7), "numbered"),
        (lambda o: o["epochs"][0]["ids"].append(o["zones"]["excluded"][0]), "excluded"),
        (lambda o: o.__setitem__("n_total", 3), "n_total"),
        (lambda o: o["epochs"][0].pop("ids"), "malformed"),
    ],
)
def test_validation_on_load(tmp_path, mutate, msg):
    plan = make_plan("spectrumkd", list(range(20)), list(range(20)), epochs=3, warmup=0)
    obj = plan.to_dict()
    mutate(obj)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(SpectrumKDError, match=msg):
        Plan.load(p)


def test_load_reports_json_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"spectrumkd": "plan",\n "n_total": ,}')
    with pytest.raises(SpectrumKDError, match="broken.json:2"):
        Plan.load(p)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_scores_with_and_without_header(tmp_path):
    a = read_scores(write(tmp_path / "a.jsonl", ['{"spectrumkd": "scores", "metric": "ce"}',
                                                 '{"id": "x", "score": 1}', '{"id": 2, "score": 0.5}']))
    b = read_scores(write(tmp_path / "b.jsonl", ['{"id": "x", "score": 1}', '{"id": 2, "score": 0.5}']))
    assert a.header["metric"] == "ce" and b.header is None
    assert a.ids == b.ids == ["x", 2]


@pytest.mark.parametrize(
    "lines, msg",
    [
        ([], "no scores"),
        (['{"spectrumkd": "scores"}'], "no scores"),
        (['{"id": "a", "score": 1.0}'], "at least 2"),
        (['{"id": "a", "score": 1.0}', '{"id": "b" "score": 2}'], "s.jsonl:2: not valid JSON"),
        (['{"id": "a", "score": 1.0}', '{"id": "b"}'], "s.jsonl:2: missing field"),
        (['{"id": "a", "score": NaN}', '{"id": "b", "score": Infinity}', '{"id": "c", "score": 1}'],
         "'a', 'b'"),
        (['{"id": "a", "score": 1}', '{"id": "a", "score": 2}'], "duplicate ids 'a'"),
        (['{"id": "a", "score": "1.0"}', '{"id": "b", "score": 2}'], "s.jsonl:1: score must be"),
        (['{"id": "a", "score": 1}', '{"spectrumkd": "scores"}'], "header line must be the first"),
        (['{"spectrumkd": "plan"}'], "not scores"),
    ],
)
def test_read_scores_errors(tmp_path, lines, msg):
    with pytest.raises(SpectrumKDError, match=msg):
        read_scores(write(tmp_path / "s.jsonl", lines))
