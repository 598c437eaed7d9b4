"""Issue 20 probes: an edited partial scores file is refused on resume, never trusted.

``"score": true`` was stored as 1.0 and a NaN score went on into the plan; a row id that is
neither a string nor an integer could not be planned. Each is one line naming file and line.
"""

from __future__ import annotations

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum import read_scores
from spectrumkd.scoring.scores_file import read_partial

HEADER = '{"spectrumkd": "scores", "metric": "ce"}\n'


@pytest.mark.parametrize(("row", "needle"), [
    ('{"id": "b", "score": true}', "score must be a number, got True"),
    ('{"id": "b", "score": NaN}', "score nan is not finite"),
    ('{"id": "b", "score": -Infinity}', "score -inf is not finite"),
    ('{"id": "b", "score": "2.0"}', "score must be a number"),
    ('{"id": ["b"], "score": 2.0}', "neither a string nor an integer"),
    ('{"id": "b"}', "missing field(s) score"),
])
def test_edited_partial_rows_are_refused(tmp_path, row, needle):
    path = tmp_path / "scores.jsonl"
    path.write_text(HEADER + '{"id": "a", "score": 1.5}\n' + row + "\n")
    with pytest.raises(SpectrumKDError) as exc:
        read_partial(path)
    assert str(exc.value).startswith(f"{path}:3: ") and needle in str(exc.value), str(exc.value)


def test_true_is_not_a_score_for_the_planner_either(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"id": "a", "score": 1.5}\n{"id": "b", "score": true}\n')
    with pytest.raises(SpectrumKDError, match="scores.jsonl:2: score must be a number, got True"):
        read_scores(path)
