"""The Dolly subset shipped for the offline demo: readable by name, licence notice beside it."""

import json

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.data.formats import load_records, packaged_data


def test_packaged_rows_are_unchanged_copies(shared_data):
    train = packaged_data("dolly/train.jsonl").read_text().splitlines()
    dev = (shared_data / "dolly" / "dev.jsonl").read_text().splitlines()
    assert train == dev[: len(train)] and len(train) == 400
    evals = packaged_data("dolly/eval.jsonl").read_text().splitlines()
    assert evals == (shared_data / "dolly" / "valid.jsonl").read_text().splitlines()[:100]
    assert "CC BY-SA 3.0" in (packaged_data("dolly/train.jsonl").parent / "NOTICE.md").read_text()


def test_spectrumkd_scheme_in_data_and_eval_loaders():
    from spectrumkd.evaluate.sets import load_set

    records = load_records("spectrumkd:dolly/train.jsonl", limit=5)
    assert [r.id for r in records] == [f"train-{i}" for i in range(1, 6)]
    eval_set = load_set("dolly", "instruct", data="spectrumkd:dolly/eval.jsonl", limit=4)
    first = json.loads(packaged_data("dolly/eval.jsonl").read_text().splitlines()[0])
    assert len(eval_set.items) == 4 and eval_set.items[0].references == (first["output"],)
    with pytest.raises(SpectrumKDError, match="no packaged data file 'dolly/nope.jsonl'"):
        load_records("spectrumkd:dolly/nope.jsonl")
