"""jsonl: a torn last line (no newline) is detected and, when asked, passed over."""

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.jsonl import has_torn_tail, iter_jsonl
from spectrumkd.scoring.scores_file import read_partial


def test_torn_tail_is_skipped_only_when_asked(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"spectrumkd": "scores"}\n{"id": "a", "score": 1}\n\n{"id": "b", "sc')
    assert has_torn_tail(p)
    assert [n for n, _ in iter_jsonl(p, skip_torn=True)] == [1, 2]
    with pytest.raises(SpectrumKDError, match="s.jsonl:4: not valid JSON"):
        list(iter_jsonl(p))
    assert read_partial(p) == ({"spectrumkd": "scores"}, {"a": 1}, True)
    p.write_bytes(b'{"id": "a", "score": 1}\n')
    assert not has_torn_tail(p) and read_partial(p) == (None, {"a": 1}, False)
    p.write_bytes(b"")
    assert not has_torn_tail(p) and read_partial(p) == (None, {}, False)
