"""``train --progress`` and the training history: saved in the checkpoint (plain numbers, loadable with
``weights_only=True``), optionally as JSON beside the model, and shown by ``inspect``; older checkpoints without
one still load."""

import json
import math
import subprocess
import sys

import pytest
import torch

from compiler.errors import UserError
from compiler.frontend import checkpoint
from conftest import EXAMPLE, ROOT
from test_cli_errors import call_cli as _call

SMALL = ["--dataset", "synthetic", "--dim", "8", "--heads", "2", "--samples", "64", "--batch-size", "32"]
EPOCH_KEYS = ["epoch", "loss", "train_accuracy", "held_out_accuracy", "lr", "seconds"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs with ``--progress --history``, stderr a pipe: (model path, its process)."""
    out = tmp_path_factory.mktemp("train") / "small.pt"
    r = subprocess.run([sys.executable, "-m", "compiler", "train", *SMALL, "--epochs", "2", "--out", str(out),
                        "--progress", "--history"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out, r


def test_progress_writes_a_line_per_epoch_when_stderr_is_a_pipe(trained):
    _, r = trained
    lines = [line for line in r.stderr.splitlines() if line.startswith("train: epoch")]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"]
    assert all(" loss " in line and " held_out_acc " in line and " lr " in line for line in lines)
    assert "history in" in r.stdout


def test_the_history_is_in_the_checkpoint_and_beside_it(trained):
    out, _ = trained
    raw = torch.load(out, map_location="cpu", weights_only=True)["history"]
    doc = json.loads(out.with_name("small.history.json").read_text())
    assert next(iter(doc)) == "schema_version" and doc["schema_version"] == 1 and doc["model"] == str(out)
    assert {k: v for k, v in doc.items() if k not in ("schema_version", "model")} == raw
    assert [e["epoch"] for e in raw["epochs"]] == [1, 2] and all(list(e) == EPOCH_KEYS for e in raw["epochs"])
    for e in raw["epochs"]:
        assert math.isfinite(e["loss"]) and e["loss"] > 0 and e["seconds"] > 0
        assert 0 <= e["train_accuracy"] <= 1 and 0 <= e["held_out_accuracy"] <= 1
    assert raw["epochs"][1]["lr"] < raw["epochs"][0]["lr"] <= 5e-3          # one-cycle: down at the end
    assert (raw["dataset"], raw["train_samples"], raw["epochs_asked"], raw["batch_size"]) == ("synthetic", 64, 2, 32)
    assert 0 <= raw["held_out_accuracy"] <= 1
    assert checkpoint.training_history(checkpoint.load(out)) == raw


def test_inspect_shows_the_last_epoch(trained, capsys):
    out, _ = trained
    status, stdout, _ = _call(capsys, "inspect", out, "--count", "4", "--json")
    assert status == 0
    t = json.loads(stdout)["training"]
    last = checkpoint.training_history(checkpoint.load(out))["epochs"][-1]
    assert t["epochs"] == 2 and t["last_epoch"] == last and t["dataset"] == "synthetic"
    status, stdout, _ = _call(capsys, "inspect", out, "--count", "4")
    assert status == 0 and "training: 2 epochs on synthetic" in stdout and f"loss {last['loss']:.4f}" in stdout


def test_without_progress_a_pipe_gets_nothing_and_no_history_file(tmp_path, capsys):
    out = tmp_path / "m.pt"
    status, stdout, err = _call(capsys, "train", *SMALL, "--epochs", "1", "--out", out)
    assert status == 0 and err == "" and "history in" not in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert len(checkpoint.training_history(checkpoint.load(out))["epochs"]) == 1


def test_epochs_0_records_an_empty_history(tmp_path, capsys):
    out, history = tmp_path / "m.pt", tmp_path / "h.json"
    status, stdout, _ = _call(capsys, "train", *SMALL, "--epochs", "0", "--out", out, "--history", history)
    assert status == 0 and f"history in {history}" in stdout
    doc = json.loads(history.read_text())
    assert doc["epochs"] == [] and 0 <= doc["held_out_accuracy"] <= 1 and doc["seconds"] < 60
    status, stdout, _ = _call(capsys, "inspect", out, "--count", "4", "--json")
    assert json.loads(stdout)["training"]["last_epoch"] is None


def test_an_old_checkpoint_without_history_loads(capsys):
    assert "history" not in torch.load(EXAMPLE, map_location="cpu", weights_only=True)
    assert checkpoint.training_history(checkpoint.load(EXAMPLE)) is None
    status, stdout, _ = _call(capsys, "inspect", EXAMPLE, "--count", "4", "--json")
    assert status == 0 and json.loads(stdout)["training"] is None
    status, stdout, _ = _call(capsys, "inspect", EXAMPLE, "--count", "4")
    assert "training: no history in the checkpoint" in stdout


@pytest.mark.parametrize("case,fragment", [
    ("exists", "exists; give --force"),
    ("same", "is --out's file"),
    ("empty", "--history is an empty path"),
    ("folder", "folder"),
])
def test_a_bad_history_path_is_refused_before_training(tmp_path, capsys, case, fragment):
    out = tmp_path / "m.pt"
    history = {"exists": tmp_path / "m.history.json", "same": out, "empty": " ",
               "folder": tmp_path / "nowhere" / "h.json"}[case]
    if case == "exists":
        history.write_text("{}")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["train", *SMALL, "--epochs", "50", "--out", out, "--history"] + ([] if case == "exists" else [history])
    status, stdout, err = _call(capsys, *args)
    assert status == 2 and stdout == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_checkpoint_whose_history_is_not_plain_data_is_refused(tmp_path):
    payload = torch.load(EXAMPLE, map_location="cpu", weights_only=True)
    for bad in ([1, 2], {"epochs": [{"loss": torch.ones(2)}]}, {"epochs": "x"}):
        path = tmp_path / "bad.pt"
        torch.save({**payload, "history": bad}, path)
        with pytest.raises(UserError, match="'history' must be a dict of plain numbers"):
            checkpoint.load(path)
    with pytest.raises(TypeError, match="history must be made of"):
        checkpoint.save(checkpoint.load(EXAMPLE), tmp_path / "x.pt", history={"t": torch.ones(1)})
    assert not (tmp_path / "x.pt").exists()


def test_help_names_the_flags(capsys):
    status, stdout, _ = _call(capsys, "train", "--help")
    assert status == 0 and "--progress" in stdout and "--history" in stdout and ".history.json" in stdout
