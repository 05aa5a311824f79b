"""Shared fixtures: the bundled example model, its IR and the digits test split (loaded once per session)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"


@pytest.fixture(scope="session")
def digits_model():
    from compiler.frontend import checkpoint
    return checkpoint.load(EXAMPLE)


@pytest.fixture(scope="session")
def digits_graph(digits_model):
    from compiler.flows.lower import lower
    return lower(digits_model)


@pytest.fixture(scope="session")
def digits_test(digits_model):
    from compiler.frontend.data import load_dataset
    return load_dataset("digits", digits_model.cfg, "test")
