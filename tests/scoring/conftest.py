"""Tiny inputs for the scoring tests: a tokenizer and Dolly-like examples."""

import pytest
from scoring_helpers import make_records

from spectrumkd.data import build_examples
from spectrumkd.models import tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def examples(tok):
    ex, dropped = build_examples(make_records(24), tok)
    assert not dropped
    return ex
