"""The inputs a command works on: a ``.npy`` array (with labels) or a split of a dataset."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..frontend.data import is_npz, load_dataset, load_inputs


def default_dataset(model) -> str:
    """The dataset ``model`` was trained on, else the one its input shape implies."""
    cfg = model.cfg
    by_shape = {("image", 1, 8): "digits", ("image", 1, 28): "mnist"}
    return model.dataset or by_shape.get((cfg.input, cfg.channels, cfg.image_size), "synthetic")


def load_samples(model, *, inputs: str | None = None, labels: str | None = None, dataset: str | None = None,
                 split: str = "test", count: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(x, y or None, description)`` from ``inputs``/``labels`` (``.npy`` files) or a dataset split
    (default: :func:`default_dataset`); the first ``count`` samples if ``count`` is given."""
    cfg = model.cfg
    for flag, value in (("--inputs", inputs), ("--labels", labels)):
        if value is not None and not str(value).strip():
            raise UserError(f"{flag} is an empty path")
    if count == 0:
        raise UserError("--count must be at least 1")
    if labels and not inputs:
        raise UserError("--labels needs --inputs")
    if inputs:
        if dataset:
            raise UserError("give either --inputs or --dataset, not both")
        x = load_inputs(inputs, cfg, count)
        y = None
        if labels:
            try:
                y = np.load(labels, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise UserError(f"{labels}: not a readable .npy array ({exc})") from None
            if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
                raise UserError(f"{labels}: labels must be {len(x)} integers, not {y.dtype} {y.shape}")
            y = y.astype(np.int64)
        if count:
            x, y = x[:count], (y[:count] if y is not None else None)
        return x, y, str(inputs)
    name = dataset or default_dataset(model)
    data = load_dataset(name, cfg, split, count=count)
    return data.x, data.y, name if is_npz(name) else f"{name}/{split}"      # an npz has no splits
