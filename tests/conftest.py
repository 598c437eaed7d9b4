"""Shared pytest configuration. Fixtures that build tiny random models live beside the tests that use them."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real Dolly, GSM8K, HumanEval, ...)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_ignore_collect(collection_path, config):
    """Do not collect conftest.py files as doctest modules (``--doctest-modules`` is for src/).

    Several test folders have a conftest.py; importing them as doctest modules clashes on the
    shared basename. They still load as conftests (fixtures and hooks).
    """
    if collection_path.name == "conftest.py":
        return True
    return None
