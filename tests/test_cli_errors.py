"""Bad input is refused as promised: one ``error: ...`` line on stderr, exit status 2, no traceback, nothing written.

Most cases call ``compiler.cli.main`` in-process (an exception other than the refusal would fail the test just as
a traceback would reach the user); a handful run ``python -m compiler`` as a real subprocess to prove the same
at the process boundary.
"""

import io
import json
import os
import subprocess
import time
import sys

import numpy as np
import pytest
import torch

from compiler.cli import main
from conftest import EXAMPLE, ROOT


# ---------------------------------------------------------------- helpers

def run_cli(*args):
    """``python -m compiler ARGS`` as a subprocess -> (status, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "compiler", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def call_cli(capsys, *args):
    """``compiler.cli.main(ARGS)`` in-process -> (status, stdout, stderr); argparse exits via SystemExit."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status, err, *fragments):
    """Exit status 2 and exactly one stderr line ``error: ...`` that contains every fragment."""
    assert "Traceback" not in err, err
    assert status == 2, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def digits_payload():
    return torch.load(EXAMPLE, map_location="cpu", weights_only=True)


def save_payload(path, edit):
    payload = digits_payload()
    edit(payload)
    torch.save(payload, path)


class RunsShellWhenUnpickled:
    """Unpickling this runs ``echo pwned > marker``: a checkpoint that would execute code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


class CustomObject:
    """A plain user class: unpickling it needs an import, so it is refused too."""

    def __init__(self):
        self.weights = [1, 2, 3]


# ---------------------------------------------------------------- model files given to inspect and evaluate

def _flip_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    for i in range(mid, mid + 64):
        b[i] ^= 0xFF
    return bytes(b)


def _config(**changes):
    return lambda p: p["config"].update(changes)


def _state(edit):
    return lambda p: edit(p["state_dict"])


# name -> (how to write the file at PATH, fragments the one error line must contain)
BAD_MODEL_FILES = {
    "missing": (None, ["no such file"]),
    "empty": (lambda path: path.write_bytes(b""), ["empty"]),
    "truncated": (lambda path: path.write_bytes(EXAMPLE.read_bytes()[:EXAMPLE.stat().st_size // 2]),
                  ["not a readable checkpoint"]),
    "random-bytes": (lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
                     ["not a readable checkpoint"]),
    "bytes-flipped-in-middle": (lambda path: path.write_bytes(_flip_middle(EXAMPLE.read_bytes())),
                                ["not a readable checkpoint"]),
    "text-file": (lambda path: path.write_text("hello, this is not a model\n"), ["not a readable checkpoint"]),
    "npy-array": (lambda path: path.write_bytes(_npy_bytes(np.zeros((3, 3), np.float32))),
                  ["not a readable checkpoint"]),
    "plain-tensor": (lambda path: torch.save(torch.zeros(3), path), ["no 'format' key"]),
    "dict-without-format": (lambda path: torch.save({"config": {}, "state_dict": {}}, path), ["no 'format' key"]),
    "list-payload": (lambda path: torch.save([1, 2, 3], path), ["no 'format' key"]),
    "custom-class-pickle": (lambda path: torch.save(CustomObject(), path), ["code execution"]),
    "unknown-format": (lambda path: save_payload(path, lambda p: p.update(format="onnx")), ["unknown format"]),
    "unknown-version": (lambda path: save_payload(path, lambda p: p.update(version=99)), ["version 99"]),
    "no-config": (lambda path: save_payload(path, lambda p: p.pop("config")), ["no 'config'"]),
    "config-not-a-dict": (lambda path: save_payload(path, lambda p: p.update(config=[1, 2])), ["mapping"]),
    "config-unknown-key": (lambda path: save_payload(path, _config(dropout=0.1)), ["unknown key", "dropout"]),
    "config-bits-5": (lambda path: save_payload(path, _config(bits=5)), ["bits"]),
    "config-levels-3": (lambda path: save_payload(path, _config(levels=3)), ["levels"]),
    "config-timesteps-0": (lambda path: save_payload(path, _config(timesteps=0)), ["timesteps"]),
    "config-heads-not-dividing-dim": (lambda path: save_payload(path, _config(heads=5)), ["heads 5", "dim 32"]),
    "config-patch-not-dividing-image": (lambda path: save_payload(path, _config(patch=3)), ["patch 3"]),
    "config-attention-softmax": (lambda path: save_payload(path, _config(attention="softmax")), ["softmax"]),
    "config-input-video": (lambda path: save_payload(path, _config(input="video")), ["video"]),
    "config-string-for-int": (lambda path: save_payload(path, _config(dim="32")), ["dim must be an integer"]),
    "config-valid-but-not-the-weights": (lambda path: save_payload(path, _config(dim=64, heads=4)),
                                          ["the config needs"]),
    "dataset-not-a-name": (lambda path: save_payload(path, lambda p: p.update(dataset=7)), ["dataset"]),
    "state-not-a-dict": (lambda path: save_payload(path, lambda p: p.update(state_dict=[1])), ["state_dict"]),
    "state-missing-key": (lambda path: save_payload(path, _state(lambda s: s.pop("head.weight"))),
                          ["missing", "head.weight"]),
    "state-unexpected-key": (lambda path: save_payload(path, _state(lambda s: s.update(extra=torch.zeros(1)))),
                             ["unexpected", "extra"]),
    "state-wrong-shape": (lambda path: save_payload(path, _state(lambda s: s.update(pos=torch.zeros(15, 32)))),
                          ["pos", "shape"]),
    "state-nan": (lambda path: save_payload(path, _state(lambda s: s["stem.weight"][0].fill_(float("nan")))),
                  ["stem.weight", "nan"]),
    "state-inf": (lambda path: save_payload(path, _state(lambda s: s["head.bias"].fill_(float("inf")))),
                  ["head.bias", "infinite"]),
    "state-non-tensor": (lambda path: save_payload(path, _state(lambda s: s.update(pos=[[0.0] * 32] * 16))),
                         ["tensors"]),
    "state-huge-lsq-scale": (lambda path: save_payload(path, _state(lambda s: s["stem.quant.alpha"].mul_(1e38))),
                             ["stem.rq", "beyond any integer multiplier"]),
    "state-meta-tensor": (lambda path: save_payload(path, _state(lambda s: s.update(pos=s["pos"].to("meta")))),
                          ["pos", "dense real tensor", "meta"]),
    "state-sparse-tensor": (lambda path: save_payload(path, _state(lambda s: s.update(pos=s["pos"].to_sparse()))),
                            ["pos", "dense real tensor", "sparse"]),
    "state-complex-tensor": (lambda path: save_payload(path, _state(
        lambda s: s.update(pos=s["pos"].to(torch.complex64) * complex(float("nan"), 1)))),
        ["pos", "dense real tensor", "complex"]),
}


def _npy_header_only(shape, dtype=np.uint8):
    """An ``.npy`` header that declares ``shape`` (followed by nothing)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _write_bad_model(tmp_path, name):
    write, fragments = BAD_MODEL_FILES[name]
    path = tmp_path / f"{name}.pt"
    if write is not None:
        write(path)
    return path, fragments


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
@pytest.mark.parametrize("name", list(BAD_MODEL_FILES))
def test_bad_model_file_is_refused(tmp_path, capsys, command, name):
    path, fragments = _write_bad_model(tmp_path, name)
    before = listing(tmp_path)
    status, out, err = call_cli(capsys, command, path, "--count", 4)
    assert_refused(status, err, str(path), *fragments)
    assert out == ""
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command,name", [
    ("inspect", "missing"), ("evaluate", "truncated"), ("inspect", "bytes-flipped-in-middle"),
    ("evaluate", "config-heads-not-dividing-dim"), ("inspect", "state-nan"),
    ("inspect", "state-huge-lsq-scale"),                       # no numpy warning before the error line
])
def test_bad_model_file_is_refused_by_the_real_process(tmp_path, command, name):
    path, fragments = _write_bad_model(tmp_path, name)
    status, out, err = run_cli(command, path)
    assert_refused(status, err, str(path), *fragments)
    assert out == ""


@pytest.mark.parametrize("command,where", [("inspect", "whole-payload"), ("evaluate", "inside-a-real-checkpoint")])
def test_pickle_that_runs_code_is_refused_not_run(tmp_path, command, where):
    marker = tmp_path / "PWNED"
    evil = RunsShellWhenUnpickled(marker)
    path = tmp_path / "evil.pt"
    if where == "whole-payload":
        torch.save(evil, path)
    else:
        save_payload(path, lambda p: p.update(dataset=evil))
    status, out, err = run_cli(command, path)
    assert_refused(status, err, str(path), "refused", "code execution")
    assert not marker.exists(), "the pickle's code ran"
    assert listing(tmp_path) == ["evil.pt"]


# ---------------------------------------------------------------- train flags

TRAIN = ["train", "--dataset", "synthetic", "--epochs", "0"]

BAD_TRAIN_FLAGS = {
    "bits-5": (TRAIN + ["--bits", "5"], ["bits"]),
    "levels-3": (TRAIN + ["--levels", "3"], ["levels"]),
    "timesteps-0": (TRAIN + ["--timesteps", "0"], ["timesteps"]),
    "heads-5-dim-32": (TRAIN + ["--heads", "5", "--dim", "32"], ["heads 5 must divide dim 32"]),
    "patch-3-image-8": (TRAIN + ["--patch", "3"], ["patch 3 must divide image_size 8"]),
    "image-size-0": (TRAIN + ["--image-size", "0"], ["image_size"]),
    "channels-0": (TRAIN + ["--channels", "0"], ["channels"]),
    "classes-1": (TRAIN + ["--classes", "1"], ["classes"]),
    "mlp-ratio-nan": (TRAIN + ["--mlp-ratio", "nan"], ["mlp_ratio"]),
    "attention-foo": (TRAIN + ["--attention", "foo"], ["--attention", "foo"]),
    "input-video": (TRAIN + ["--input", "video"], ["--input", "video"]),
    "epochs-negative": (["train", "--dataset", "synthetic", "--epochs", "-1"], ["--epochs", "-1"]),
    "dim-abc": (TRAIN + ["--dim", "abc"], ["--dim", "abc"]),
    "batch-size-0": (["train", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "0"], ["--batch-size"]),
    "samples-0": (["train", "--dataset", "synthetic", "--epochs", "1", "--samples", "0"], ["--samples"]),
    "lr-nan": (["train", "--dataset", "synthetic", "--epochs", "1", "--lr", "nan"], ["--lr"]),
    "lr-negative": (["train", "--dataset", "synthetic", "--epochs", "1", "--lr", "-1"], ["--lr"]),
    "lr-1e308": (["train", "--dataset", "synthetic", "--epochs", "1", "--lr", "1e308"], ["--lr", "(0, 1]"]),
    "samples-1e30": (["train", "--dataset", "synthetic", "--epochs", "1", "--samples", "1e30"], ["--samples"]),
    "synthetic-too-many": (["train", "--dataset", "synthetic", "--epochs", "1", "--samples", "10000000000"],
                           ["GiB", "ask for fewer"]),
    "seed-too-big": (TRAIN + ["--seed", str(2**70)], ["--seed"]),
    "digits-image-size-16": (["train", "--dataset", "digits", "--epochs", "0", "--image-size", "16"],
                             ["--image-size", "16"]),
    "digits-events": (["train", "--dataset", "digits", "--epochs", "0", "--input", "events"], ["--input"]),
    "unknown-dataset": (["train", "--dataset", "imagenet", "--epochs", "0"], ["--dataset", "imagenet"]),
    "mnist-image-size-8": (["train", "--dataset", "mnist", "--epochs", "0", "--image-size", "8"],
                           ["mnist dataset fixes --image-size to 28, not 8"]),
    "arch-foo": (TRAIN + ["--arch", "foo"], ["--arch", "foo"]),
    "head-foo": (TRAIN + ["--head", "foo"], ["--head", "foo"]),
    "dims-abc": (TRAIN + ["--arch", "metaformer", "--dims", "8,abc"], ["--dims", "8,abc"]),
    "depths-empty": (TRAIN + ["--arch", "metaformer", "--depths", ""], ["--depths", "comma-separated"]),
    "dims-for-flat": (TRAIN + ["--dims", "8,16"], ["--dims is for --arch metaformer or spikformer"]),
    "dim-for-metaformer": (TRAIN + ["--arch", "metaformer", "--dim", "16"], ["--dim is for --arch flat"]),
    "patch-for-spikformer": (TRAIN + ["--arch", "spikformer", "--patch", "4"], ["--patch is for --arch flat"]),
    "metaformer-depths-mismatch": (TRAIN + ["--arch", "metaformer", "--dims", "8,16", "--depths", "1,1,1"],
                                   ["one depth per stage"]),
    "spikformer-heads": (TRAIN + ["--arch", "spikformer", "--dims", "8,12", "--heads", "8"],
                         ["heads 8 must divide"]),
}


@pytest.mark.parametrize("name", list(BAD_TRAIN_FLAGS))
def test_bad_train_flags_are_refused_and_write_nothing(tmp_path, capsys, name):
    args, fragments = BAD_TRAIN_FLAGS[name]
    out = tmp_path / "model.pt"
    status, stdout, err = call_cli(capsys, *args, "--out", out)
    assert_refused(status, err, *fragments)
    assert not out.exists()
    assert listing(tmp_path) == []                # no temporary file left behind either


@pytest.mark.parametrize("name", ["heads-5-dim-32", "attention-foo", "digits-image-size-16"])
def test_bad_train_flags_are_refused_by_the_real_process(tmp_path, name):
    args, fragments = BAD_TRAIN_FLAGS[name]
    out = tmp_path / "model.pt"
    status, stdout, err = run_cli(*args, "--out", out)
    assert_refused(status, err, *fragments)
    assert listing(tmp_path) == []


def test_train_into_a_missing_folder_is_refused(tmp_path):
    out = tmp_path / "no" / "such" / "folder" / "model.pt"
    status, stdout, err = run_cli(*TRAIN, "--out", out)
    assert_refused(status, err, "does not exist")
    assert listing(tmp_path) == []


def test_train_onto_a_folder_is_refused(tmp_path, capsys):
    target = tmp_path / "models"
    target.mkdir()
    status, stdout, err = call_cli(capsys, *TRAIN, "--out", target)
    assert_refused(status, err, str(target), "folder")
    assert listing(tmp_path) == ["models"] and listing(target) == []


def test_train_does_not_clobber_without_force(tmp_path, capsys):
    out = tmp_path / "model.pt"
    out.write_bytes(b"an earlier model")
    status, stdout, err = call_cli(capsys, *TRAIN, "--samples", "16", "--out", out)
    assert_refused(status, err, "exists", "--force")
    assert out.read_bytes() == b"an earlier model" and listing(tmp_path) == ["model.pt"]
    status, stdout, err = call_cli(capsys, *TRAIN, "--samples", "16", "--out", out, "--force")
    assert status == 0 and out.read_bytes() != b"an earlier model" and listing(tmp_path) == ["model.pt"]


def test_train_refuses_fifos_symlinks_and_unwritable_names_before_training(tmp_path, capsys):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    link = tmp_path / "link.pt"
    link.symlink_to(tmp_path / "elsewhere.pt")
    for out, fragment in ((fifo, "not a regular file"), (link, "not a regular file"),
                          (tmp_path / ("x" * 250 + ".pt"), "cannot write")):
        for force in ([], ["--force"]):
            t0 = time.monotonic()
            status, stdout, err = call_cli(capsys, *TRAIN[:-1], "100", "--out", out, *force)
            assert_refused(status, err, fragment)
            assert time.monotonic() - t0 < 10                  # before 100 epochs of training
    assert listing(tmp_path) == ["fifo.pt", "link.pt"]


@pytest.mark.parametrize("args,fragment", [
    ([], "required"),
    (["compile"], "compile"),
    (["inspect"], "required"),
    (["train", "--dataset", "synthetic"], "--out"),
])
def test_usage_errors_are_one_line(args, fragment):
    status, stdout, err = run_cli(*args)
    assert_refused(status, err, fragment)


# ---------------------------------------------------------------- input arrays for evaluate and inspect

@pytest.fixture(scope="module")
def events_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("events") / "events.pt"
    assert main(["train", "--dataset", "synthetic", "--input", "events", "--timesteps", "2", "--epochs", "0",
                 "--out", str(out)]) == 0
    return out


def _images(shape, dtype=np.uint8):
    return np.random.default_rng(0).integers(0, 256, size=shape).astype(dtype)


# name -> (files to write in tmp_path: {name: array or bytes}, extra CLI args, fragments of the error line)
BAD_INPUTS = {
    "extra-channel": ({"x.npy": _images((5, 2, 8, 8))}, ["--inputs", "x.npy"], ["(5, 2, 8, 8)", "does not match"]),
    "wrong-height": ({"x.npy": _images((5, 1, 7, 8))}, ["--inputs", "x.npy"], ["(5, 1, 7, 8)"]),
    "float32-images": ({"x.npy": _images((5, 1, 8, 8), np.float32)}, ["--inputs", "x.npy"], ["uint8", "float32"]),
    "int64-images": ({"x.npy": _images((5, 1, 8, 8), np.int64)}, ["--inputs", "x.npy"], ["uint8", "int64"]),
    "empty-batch": ({"x.npy": _images((0, 1, 8, 8))}, ["--inputs", "x.npy"], ["no samples"]),
    "not-npy": ({"x.npy": b"pixels,pixels\n1,2\n"}, ["--inputs", "x.npy"], ["not a readable .npy"]),
    "missing-inputs": ({}, ["--inputs", "x.npy"], ["no such file"]),
    "labels-wrong-length": ({"x.npy": _images((5, 1, 8, 8)), "y.npy": np.arange(4)},
                            ["--inputs", "x.npy", "--labels", "y.npy"], ["labels", "5 integers"]),
    "labels-float": ({"x.npy": _images((5, 1, 8, 8)), "y.npy": np.arange(5.0)},
                     ["--inputs", "x.npy", "--labels", "y.npy"], ["labels", "float64"]),
    "labels-not-npy": ({"x.npy": _images((5, 1, 8, 8)), "y.npy": b"1 2 3 4 5\n"},
                       ["--inputs", "x.npy", "--labels", "y.npy"], ["not a readable .npy"]),
    "labels-missing": ({"x.npy": _images((5, 1, 8, 8))}, ["--inputs", "x.npy", "--labels", "y.npy"], ["y.npy"]),
    "labels-without-inputs": ({"y.npy": np.arange(5)}, ["--labels", "y.npy"], ["--labels needs --inputs"]),
    "inputs-and-dataset": ({"x.npy": _images((5, 1, 8, 8))}, ["--inputs", "x.npy", "--dataset", "digits"],
                           ["not both"]),
    "count-0": ({}, ["--count", "0"], ["--count"]),
    "header-declares-2**40-samples": ({"x.npy": _npy_header_only((2**40, 1, 8, 8)) + bytes(320)},
                                      ["--inputs", "x.npy"], ["not a readable .npy", "mmap length"]),
    "count-0-with-inputs": ({"x.npy": _images((5, 1, 8, 8))}, ["--inputs", "x.npy", "--count", "0"], ["--count"]),
    "inputs-empty-path": ({}, ["--inputs", ""], ["--inputs is an empty path"]),
    "labels-empty-path": ({"x.npy": _images((5, 1, 8, 8))}, ["--inputs", "x.npy", "--labels", " "],
                          ["--labels is an empty path"]),
    "count-negative": ({}, ["--count", "-3"], ["--count"]),
    "unknown-dataset": ({}, ["--dataset", "imagenet"], ["imagenet"]),
}


def _write_inputs(tmp_path, files):
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            np.save(tmp_path / name, content)


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_are_refused(tmp_path, capsys, monkeypatch, command, name):
    files, args, fragments = BAD_INPUTS[name]
    _write_inputs(tmp_path, files)
    monkeypatch.chdir(tmp_path)                      # the CLI gets relative names, as a user would type them
    before = listing(tmp_path)
    status, out, err = call_cli(capsys, command, EXAMPLE, *args)
    assert_refused(status, err, *fragments)
    assert out == ""
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command,which", [("evaluate", "--inputs"), ("inspect", "--labels")])
def test_pickled_object_array_is_refused_not_unpickled(tmp_path, command, which):
    marker = tmp_path / "PWNED"
    evil = np.empty(1, dtype=object)
    evil[0] = RunsShellWhenUnpickled(marker)
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    if which == "--inputs":
        args = ["--inputs", tmp_path / "evil.npy"]
    else:
        np.save(tmp_path / "x.npy", _images((5, 1, 8, 8)))
        args = ["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "evil.npy"]
    status, out, err = run_cli(command, EXAMPLE, *args)
    assert_refused(status, err, "evil.npy", "not a readable .npy")
    assert not marker.exists(), "the array's pickle ran"


def test_wrong_shape_inputs_are_refused_by_the_real_process(tmp_path):
    np.save(tmp_path / "x.npy", _images((5, 2, 8, 8)))
    status, out, err = run_cli("evaluate", EXAMPLE, "--inputs", tmp_path / "x.npy")
    assert_refused(status, err, "does not match")


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
@pytest.mark.parametrize("name,frames", [
    ("value-2", lambda: np.full((3, 2, 1, 8, 8), 2, np.uint8)),
    ("float-frames", lambda: np.ones((3, 2, 1, 8, 8), np.float32)),
    ("image-for-events", lambda: _images((3, 1, 8, 8))),
])
def test_bad_event_frames_are_refused(tmp_path, capsys, events_model, command, name, frames):
    np.save(tmp_path / "ev.npy", frames())
    status, out, err = call_cli(capsys, command, events_model, "--inputs", tmp_path / "ev.npy")
    assert_refused(status, err, "ev.npy")
    if name == "value-2":
        assert "binary" in err and "values up to 2" in err
    if name == "image-for-events":
        assert "(3, 1, 8, 8)" in err and "(N, 2, 1, 8, 8)" in err      # the shape as saved, and the one expected


def test_good_event_frames_are_accepted(tmp_path, capsys, events_model):
    """The events cases above fail for the reason they name, not because the model refuses every input."""
    np.save(tmp_path / "ev.npy", np.ones((3, 2, 1, 8, 8), np.bool_))
    status, out, err = call_cli(capsys, "evaluate", events_model, "--inputs", tmp_path / "ev.npy", "--json")
    assert status == 0, err
    assert json.loads(out)["samples"] == 3


# ---------------------------------------------------------------- positive control

def test_evaluate_bundled_model_succeeds():
    status, out, err = run_cli("evaluate", EXAMPLE, "--count", "20", "--json")
    assert status == 0, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert {"float_accuracy", "integer_accuracy", "agreement", "samples"} <= set(report)
    assert report["samples"] == 20


def test_good_inputs_and_labels_are_accepted(tmp_path, capsys):
    """The --inputs/--labels cases above fail for the reason they name: the same files, made right, work."""
    from compiler.frontend.data import load_dataset
    from compiler.frontend.config import ModelConfig
    data = load_dataset("digits", ModelConfig(), "test", count=5)
    np.save(tmp_path / "x.npy", data.x)
    np.save(tmp_path / "y.npy", data.y)
    status, out, err = call_cli(capsys, "inspect", EXAMPLE, "--inputs", tmp_path / "x.npy",
                                "--labels", tmp_path / "y.npy", "--json")
    assert status == 0, err
    assert json.loads(out)["samples"] == 5


def test_a_huge_config_with_no_weights_is_refused_without_building_it(tmp_path, capsys):
    """The config's model is sized on the meta device: a 1 KB file that declares the largest configuration
    and an empty state_dict is refused in well under a second, without allocating its weights."""
    import resource
    path = tmp_path / "huge.pt"
    payload = digits_payload()
    payload["config"].update(dim=1024, depth=16, heads=16, image_size=64, patch=2, channels=3)
    payload["state_dict"] = {}
    torch.save(payload, path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    status, out, err = call_cli(capsys, "inspect", path)
    assert_refused(status, err, "missing")
    assert time.monotonic() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000      # KiB: no GBs of weights


def test_the_largest_configuration_is_refused_with_the_memory_it_needs(tmp_path, capsys):
    t0 = time.monotonic()
    status, out, err = call_cli(capsys, *TRAIN, "--dim", "1024", "--depth", "16", "--heads", "16", "--mlp-ratio",
                                "16", "--image-size", "256", "--timesteps", "16", "--out", tmp_path / "m.pt")
    assert_refused(status, err, "GiB at batch size 64", "this machine has")
    assert time.monotonic() - t0 < 10 and listing(tmp_path) == []


def test_simulate_build_dir_that_cannot_take_builds_is_refused_first(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for where in (a_file, tmp_path / "afile" / "sub", "/proc/no-such-folder"):
        t0 = time.monotonic()
        status, out, err = call_cli(capsys, "simulate", EXAMPLE, "--count", "1", "--build-dir", where)
        assert_refused(status, err, "--build-dir", "cannot write simulator builds")
        assert time.monotonic() - t0 < 2                   # before the model is read
    assert listing(tmp_path) == ["afile"]


def test_a_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path, capsys):
    path = tmp_path / "two\nlines.pt"
    path.write_bytes(b"not a model")
    status, out, err = call_cli(capsys, "inspect", path)
    assert_refused(status, err, "two\\nlines.pt")
