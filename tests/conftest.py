"""Shared fixtures: the bundled example model, its IR and the digits test split (loaded once per session)."""

import os
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


# The suite builds more simulator models than a user's cache keeps (sim/cache.py: 8 per folder); keep them all
# between runs, so that a second run of the suite builds none (the CLI subprocesses inherit this).
os.environ.setdefault("QSD_FPGA_SIM_CACHE_KEEP", "64")


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A synthetic model (dim 8, 2 heads, untrained) small enough for the Amaranth simulator and for quick
    Verilator builds."""
    from compiler.cli import main
    path = tmp_path_factory.mktemp("small") / "small.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--dim", "8", "--heads", "2",
                 "--out", str(path)]) == 0
    return path
