"""``evaluate --predictions FILE.npy``: the integer golden model's classes, one per sample, written atomically;
an existing file is replaced only with ``--force``, and a bad path is refused before the model is loaded."""

import json
import os

import numpy as np
import pytest

from compiler.flows.lower import lower
from compiler.frontend import checkpoint
from compiler.frontend.data import load_dataset
from compiler.ir import golden
from conftest import EXAMPLE
from test_cli_errors import call_cli as _call


def _refused(status, err, fragment):
    assert status == 2 and "Traceback" not in err, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


def test_predictions_are_the_golden_models_classes(tmp_path, capsys, digits_graph):
    out = tmp_path / "pred.npy"
    status, stdout, err = _call(capsys, "evaluate", EXAMPLE, "--count", "40", "--predictions", out, "--json")
    assert status == 0, err
    report = json.loads(stdout)
    assert report["predictions"] == str(out)
    pred = np.load(out, allow_pickle=False)
    assert pred.dtype == np.int64 and pred.shape == (40,)
    x = load_dataset("digits", checkpoint.load(EXAMPLE).cfg, "test", count=40).x
    assert np.array_equal(pred, golden.predict(digits_graph, x).argmax(1))
    assert report["integer_accuracy"] == pytest.approx(float((pred == load_dataset(
        "digits", checkpoint.load(EXAMPLE).cfg, "test", count=40).y).mean()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.npy"]      # no temporary file left


def test_predictions_of_npy_inputs_follow_their_order(tmp_path, capsys, digits_graph, digits_test):
    x = digits_test.x[[5, 1, 3]]
    np.save(tmp_path / "x.npy", x)
    status, stdout, err = _call(capsys, "evaluate", EXAMPLE, "--inputs", tmp_path / "x.npy",
                                "--predictions", tmp_path / "p.npy")
    assert status == 0, err
    assert "classes written to" in stdout
    assert np.array_equal(np.load(tmp_path / "p.npy"), golden.predict(digits_graph, x).argmax(1))


def test_an_existing_file_needs_force(tmp_path, capsys):
    out = tmp_path / "pred.npy"
    np.save(out, np.arange(3))
    status, _, err = _call(capsys, "evaluate", EXAMPLE, "--count", "4", "--predictions", out)
    _refused(status, err, "exists; give --force to replace it, or another --predictions")
    assert np.array_equal(np.load(out), np.arange(3))                      # untouched
    status, _, err = _call(capsys, "evaluate", EXAMPLE, "--count", "4", "--predictions", out, "--force")
    assert status == 0, err
    assert np.load(out).shape == (4,)


@pytest.mark.parametrize("name,fragment", [
    ("pred.txt", "must end in .npy"),
    ("missing/pred.npy", "does not exist"),
    ("folder.npy", "is a folder"),
    ("link.npy", "not a regular file"),
    ("", "empty path"),
])
def test_bad_paths_are_refused_before_the_model_is_loaded(tmp_path, capsys, name, fragment):
    (tmp_path / "folder.npy").mkdir()
    os.symlink(tmp_path / "elsewhere.npy", tmp_path / "link.npy")
    before = sorted(p.name for p in tmp_path.iterdir())
    path = str(tmp_path / name) if name else ""
    status, stdout, err = _call(capsys, "evaluate", tmp_path / "no-such-model.pt", "--predictions", path,
                                "--force")
    _refused(status, err, fragment)                     # not "no such file" about the model: checked first
    assert stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_help_names_the_option(capsys):
    status, out, _ = _call(capsys, "evaluate", "--help")
    assert status == 0 and "--predictions FILE.npy" in out and "--force" in out
