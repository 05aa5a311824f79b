"""``--dataset npz:PATH``: the user's samples in an ``.npz`` (``x`` uint8 images ``[N, C, H, W]`` / ``[N, H, W]`` or
binary event frames ``[N, T, C, H, W]``, ``y`` integer labels) for train, inspect, evaluate and simulate; every
malformed archive, or one that does not fit the model, is refused with one line and exit status 2."""

import json
import os
import zipfile

import numpy as np
import pytest

import compiler
from compiler.frontend import checkpoint
from compiler.frontend.data import read_npz
from compiler.ir import golden
from conftest import EXAMPLE, ROOT
from test_cli_errors import call_cli as _call


def _refused(status, out, err, *fragments):
    assert "Traceback" not in err and status == 2, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture
def digits_npz(tmp_path, digits_test):
    """40 held-out digits as [N, H, W] (the channel axis left out) with their labels."""
    path = tmp_path / "digits.npz"
    np.savez(path, x=digits_test.x[:40, 0], y=digits_test.y[:40])
    return path


def test_evaluate_and_inspect_on_an_npz(capsys, digits_npz, digits_test, digits_graph):
    status, out, err = _call(capsys, "evaluate", EXAMPLE, "--dataset", f"npz:{digits_npz}", "--json")
    assert status == 0, err
    r = json.loads(out)
    assert r["samples"] == 40 and r["samples_from"] == f"npz:{digits_npz}"
    pred = golden.predict(digits_graph, digits_test.x[:40]).argmax(1)
    assert r["integer_accuracy"] == pytest.approx(float((pred == digits_test.y[:40]).mean()))
    status, out, err = _call(capsys, "inspect", EXAMPLE, "--dataset", f"npz:{digits_npz}", "--count", "5", "--json")
    assert status == 0 and json.loads(out)["samples"] == 5, err


def test_labels_are_optional_for_evaluate(tmp_path, capsys, digits_test):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, x=digits_test.x[:6])                     # [N, 1, 8, 8], compressed, no y
    status, out, err = _call(capsys, "evaluate", EXAMPLE, "--dataset", f"npz:{path}", "--json")
    assert status == 0, err
    r = json.loads(out)
    assert r["samples"] == 6 and r["float_accuracy"] is None and r["integer_accuracy"] is None


def test_train_takes_the_shape_and_classes_from_the_archive(tmp_path, capsys, digits_test):
    path = tmp_path / "four.npz"
    keep = digits_test.y < 4
    np.savez(path, x=digits_test.x[keep][:60, 0], y=digits_test.y[keep][:60].astype(np.int32))
    out = tmp_path / "m.pt"
    status, stdout, err = _call(capsys, "train", "--dataset", f"npz:{path}", "--epochs", "0", "--dim", "8",
                                "--heads", "2", "--out", out)
    assert status == 0, err
    assert f"on the 60 samples of npz:{path}" in stdout
    model = checkpoint.load(out)
    assert (model.cfg.input, model.cfg.channels, model.cfg.image_size, model.cfg.classes) == ("image", 1, 8, 4)
    assert model.dataset is None                                       # the file may move: no default to it
    status, stdout, err = _call(capsys, "evaluate", out, "--dataset", f"npz:{path}", "--json")
    assert status == 0 and json.loads(stdout)["agreement"] == 1.0, err


def test_train_on_event_frames(tmp_path, capsys):
    path = tmp_path / "events.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((32, 3, 2, 4, 4)) < 0.3, y=np.arange(32) % 5)     # bool frames, T = 3
    out = tmp_path / "e.pt"
    status, _, err = _call(capsys, "train", "--dataset", f"npz:{path}", "--epochs", "0", "--dim", "8", "--heads",
                           "2", "--patch", "2", "--classes", "6", "--out", out)
    assert status == 0, err
    cfg = checkpoint.load(out).cfg
    assert (cfg.input, cfg.timesteps, cfg.channels, cfg.image_size, cfg.classes) == ("events", 3, 2, 4, 6)
    status, stdout, err = _call(capsys, "evaluate", out, "--dataset", f"npz:{path}", "--count", "7", "--json")
    assert status == 0 and json.loads(stdout)["samples"] == 7, err


@pytest.mark.parametrize("flags,fragment", [
    (["--image-size", "16"], "fixes --image-size to 8, not 16"),
    (["--channels", "3"], "fixes --channels to 1, not 3"),
    (["--input", "events"], "fixes --input to image, not events"),
    (["--classes", "9"], "labels go up to 9, so --classes must be at least 10, not 9"),
])
def test_train_flags_that_contradict_the_archive_are_refused(tmp_path, capsys, digits_npz, flags, fragment):
    out = tmp_path / "m.pt"
    status, stdout, err = _call(capsys, "train", "--dataset", f"npz:{digits_npz}", "--epochs", "0", *flags,
                                "--out", out)
    _refused(status, stdout, err, fragment)
    assert not out.exists()


def test_train_needs_labels_and_the_right_time_steps(tmp_path, capsys):
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 8, 8), np.uint8))
    np.savez(tmp_path / "events.npz", x=np.zeros((4, 2, 1, 8, 8), np.uint8), y=np.zeros(4, np.int64))
    status, out, err = _call(capsys, "train", "--dataset", f"npz:{tmp_path / 'nolabels.npz'}", "--epochs", "0",
                             "--out", tmp_path / "m.pt")
    _refused(status, out, err, "training needs labels")
    status, out, err = _call(capsys, "train", "--dataset", f"npz:{tmp_path / 'events.npz'}", "--epochs", "0",
                             "--timesteps", "4", "--out", tmp_path / "m.pt")
    _refused(status, out, err, "fixes --timesteps to 2, not 4")


class _RunsCode:
    """An object whose unpickling would create a folder (it must never be unpickled)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _bad_archives(tmp_path):
    def savez(name, **arrays):
        np.savez(tmp_path / name, **arrays)

    x = np.zeros((3, 1, 8, 8), np.uint8)
    y = np.arange(3)
    savez("no-x.npz", images=x, y=y)
    savez("float.npz", x=x.astype(np.float32), y=y)
    savez("2d.npz", x=np.zeros((3, 64), np.uint8), y=y)
    savez("6d.npz", x=np.zeros((3, 1, 1, 1, 8, 8), np.uint8), y=y)
    savez("not-square.npz", x=np.zeros((3, 1, 8, 6), np.uint8), y=y)
    savez("empty.npz", x=np.zeros((0, 1, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    savez("bool-images.npz", x=x.astype(bool), y=y)
    savez("events-not-binary.npz", x=np.full((3, 2, 1, 8, 8), 2, np.uint8), y=y)
    savez("y-float.npz", x=x, y=y.astype(np.float32))
    savez("y-short.npz", x=x, y=y[:2])
    savez("y-negative.npz", x=x, y=-y)
    savez("y-too-big.npz", x=x, y=y + 9)
    savez("wrong-shape.npz", x=np.zeros((3, 1, 28, 28), np.uint8), y=y)
    savez("events-for-images.npz", x=np.zeros((3, 1, 1, 8, 8), np.uint8), y=y)
    savez("pickle.npz", x=np.array([_RunsCode(tmp_path / "ran"), None], dtype=object), y=y)
    np.save(tmp_path / "array.npy", x)
    os.replace(tmp_path / "array.npy", tmp_path / "npy-not-npz.npz")
    (tmp_path / "garbage.npz").write_bytes(os.urandom(300))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:      # a header that declares 10 TB
        with archive.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (10**7, 1, 1000, 1000)})
    savez("corrupt.npz", x=np.arange(4096, dtype=np.uint8).reshape(64, 1, 8, 8), y=np.zeros(64, np.int64))
    data = bytearray((tmp_path / "corrupt.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF                                       # inside x's bytes: the CRC no longer holds
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))


BAD = {
    "no-x.npz": "no 'x' array (the samples); it holds 'images', 'y'",
    "float.npz": "x must be uint8 images",
    "2d.npz": "not an array of shape (3, 64)",
    "6d.npz": "not an array of shape (3, 1, 1, 1, 8, 8)",
    "not-square.npz": "square (H = W), not 8x6",
    "empty.npz": "x holds no samples",
    "bool-images.npz": "must be uint8 pixels, not bool",
    "events-not-binary.npz": "must be binary (0 or 1)",
    "y-float.npz": "y must be 3 integer labels",
    "y-short.npz": "y must be 3 integer labels",
    "y-negative.npz": "labels must be >= 0",
    "y-too-big.npz": "labels must be 0..9 for the model's 10 classes, not 11",
    "wrong-shape.npz": "x holds image samples of shape (1, 28, 28); the model takes image input of shape (1, 8, 8)",
    "events-for-images.npz": "x holds events samples of shape (1, 1, 8, 8)",
    "pickle.npz": "Object arrays cannot be loaded when allow_pickle=False",
    "npy-not-npz.npz": "not an .npz archive",
    "garbage.npz": "not an .npz archive",
    "huge.npz": "x declares 9,313.2 GiB, more than half of this machine's",
    "corrupt.npz": "not a readable .npz archive",
    "missing.npz": "no such file",
}


@pytest.mark.parametrize("command", ["evaluate", "inspect"])
@pytest.mark.parametrize("name", list(BAD))
def test_bad_archives_are_refused(tmp_path, capsys, command, name):
    _bad_archives(tmp_path)
    status, out, err = _call(capsys, command, EXAMPLE, "--dataset", f"npz:{tmp_path / name}")
    _refused(status, out, err, f"npz:{tmp_path / name}", BAD[name])
    assert out == "" and not (tmp_path / "ran").exists()


def test_simulate_refuses_a_bad_archive_before_building(tmp_path, capsys):
    _bad_archives(tmp_path)
    status, out, err = _call(capsys, "simulate", EXAMPLE, "--dataset", f"npz:{tmp_path / 'wrong-shape.npz'}",
                             "--build-dir", tmp_path / "sim")
    _refused(status, out, err, "the model takes image input of shape (1, 8, 8)")
    assert not any((tmp_path / "sim").iterdir())


@pytest.mark.parametrize("text", ["npz:", "npz:  ", "imagenet", "NPZ:x.npz"])
def test_a_bad_dataset_name_is_a_usage_error(capsys, text):
    status, out, err = _call(capsys, "evaluate", EXAMPLE, "--dataset", text)
    _refused(status, out, err, "--dataset", "npz:FILE.npz")


def test_the_python_api_takes_npz_too(digits_npz, digits_test):
    x, y = compiler.samples(compiler.load(EXAMPLE), dataset=f"npz:{digits_npz}", count=9)
    assert np.array_equal(x, digits_test.x[:9]) and np.array_equal(y, digits_test.y[:9])
    assert read_npz(f"npz:{digits_npz}").input == "image"


def test_help_names_npz(capsys):
    for command in ("train", "evaluate", "simulate", "inspect"):
        status, out, _ = _call(capsys, command, "--help")
        assert status == 0 and "npz:FILE" in out, command


@pytest.mark.slow
def test_simulate_an_npz_bit_exact(capsys, digits_npz):
    status, out, err = _call(capsys, "simulate", EXAMPLE, "--dataset", f"npz:{digits_npz}", "--count", "4",
                             "--json", "--build-dir", ROOT / "build" / "test-sim")
    assert status == 0, err
    r = json.loads(out)
    assert r["samples"] == 4 and r["mismatches"] == 0
