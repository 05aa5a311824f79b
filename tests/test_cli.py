"""The CLI's working paths: train, inspect and evaluate, their JSON and their help."""

import json
import subprocess
import sys

import pytest

from compiler.cli import main
from conftest import EXAMPLE, ROOT


def test_every_command_has_help():
    for cmd in ([], ["train"], ["inspect"], ["evaluate"], ["export"], ["clean"]):
        r = subprocess.run([sys.executable, "-m", "compiler", *cmd, "--help"], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout


def test_evaluate_json_on_bundled_model(capsys):
    assert main(["evaluate", str(EXAMPLE), "--dataset", "digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 450 and report["samples_from"] == "digits/test"
    for key in ("float_accuracy", "integer_accuracy", "agreement"):
        assert 0.0 <= report[key] <= 1.0
    assert report["float_accuracy"] >= 0.95 and report["agreement"] >= 0.99


def test_inspect_json_on_bundled_model(capsys):
    assert main(["inspect", str(EXAMPLE), "--count", "16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 16
    # 4-bit weights: stem 32x1x2x2, q/k/v/proj 32x32, fc1 128x32, fc2 32x128, head 10x32
    assert r["weight_memory_bytes"] == (128 + 4 * 1024 + 2 * 4096 + 320) * 4 // 8
    ops = r["synaptic_ops"]
    assert 0 < ops["effective"] < ops["dense"]
    assert ops["effective"] == pytest.approx(ops["effective_macs"] + ops["effective_acs"])
    assert 0.0 < r["activation_sparsity"] < 1.0
    names = [layer["name"] for layer in r["layers"]]
    assert names[0] == "stem" and names[-1] == "logits"


@pytest.mark.parametrize("flags", [
    ["--dim", "15", "--heads", "3", "--bits", "3", "--levels", "2", "--timesteps", "3", "--attention", "sdsa1"],
    ["--input", "events", "--timesteps", "2", "--image-size", "6", "--channels", "2", "--patch", "3",
     "--classes", "4", "--bits", "8", "--levels", "1", "--attention", "linear", "--depth", "2"],
])
def test_train_then_inspect_and_evaluate_synthetic(tmp_path, capsys, flags):
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", *flags, "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples_from"] == "synthetic/test"     # the dataset it was trained on
    assert 0.0 <= report["agreement"] <= 1.0
    assert main(["inspect", str(out), "--json", "--count", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["timesteps"] in (2, 3)


def test_train_digits_a_few_epochs_learns(tmp_path, capsys):
    out = tmp_path / "d.pt"
    assert main(["train", "--epochs", "3", "--dim", "16", "--heads", "2", "--out", str(out)]) == 0
    assert "float accuracy" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["float_accuracy"] > 0.2              # far above chance (0.1) after 3 epochs
