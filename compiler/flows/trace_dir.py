"""``simulate --trace-dir DIR``: every stored layer of every simulated sample, the hardware's and the golden
model's side by side, one ``.npz`` per sample, and ``index.json`` saying which layers matched (docs/cli.md).

The folder is checked before any work (:func:`check`), written into a staging folder beside it and renamed
into place only once complete (:class:`TraceWriter`): an interrupted or failed simulation leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import SCHEMA_VERSION

INDEX = "index.json"
#: Differences listed per layer and sample in the index (their count is always complete).
SHOWN = 5


def sample_file(b: int) -> str:
    return f"sample-{b:05d}.npz"


def check(path: str | Path, force: bool) -> Path:
    """UserError unless ``path`` may take the traces: a new folder in an existing, writable one, or an empty
    folder; a non-empty one only with ``force`` (then replaced), never the working folder or one above it.
    Nothing is written."""
    if not str(path).strip():
        raise UserError("--trace-dir is an empty path")
    out = Path(path)
    where = out.resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        raise UserError(f"--trace-dir {path}: the traces replace that folder, and it holds the working folder; "
                        f"give a folder of their own")
    if out.exists() and not out.is_dir():
        raise UserError(f"--trace-dir {path}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--trace-dir {path}: exists and is not empty; give another folder, or --force to "
                        f"replace it")
    parent = where.parent
    if not parent.is_dir():
        raise UserError(f"--trace-dir {path}: no folder {parent} to create it in")
    try:
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as exc:
        raise UserError(f"--trace-dir {path}: cannot write in {parent} ({exc.strerror or exc})") from None
    return out


def _compare(hw: np.ndarray, golden: np.ndarray) -> dict:
    diff = np.argwhere(hw != golden)
    first = [{"position": [int(i) for i in pos], "hardware": int(hw[tuple(pos)]),
              "golden": int(golden[tuple(pos)])} for pos in diff[:SHOWN]]
    return {"matched": len(diff) == 0, "shape": list(hw.shape), "differences": int(len(diff)),
            "first_differences": first}


class TraceWriter:
    """Writes the traces into a staging folder beside ``out``; :meth:`finish` renames it into place."""

    def __init__(self, out: Path, force: bool):
        self.out = check(out, force)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.resolve().parent))
        self.layers: list[str] = []
        self.samples: list[dict] = []

    def add(self, b: int, x: np.ndarray, layers: list[tuple[str, np.ndarray, np.ndarray]],
            hw_logits: np.ndarray, golden_logits: np.ndarray) -> None:
        """Sample ``b``: its input, and per stored layer (in program order) ``(name, hardware, golden)``
        arrays of one shape, then the logits."""
        arrays = {"input": np.asarray(x)}
        compared = {}
        for name, hw, golden in [*layers, ("logits", np.asarray(hw_logits), np.asarray(golden_logits))]:
            hw = np.asarray(hw).astype(np.int64)
            golden = np.asarray(golden).astype(np.int64).reshape(hw.shape)
            arrays[f"hardware/{name}"] = hw
            arrays[f"golden/{name}"] = golden
            compared[name] = _compare(hw, golden)
            if name not in self.layers:
                self.layers.append(name)
        np.savez_compressed(self.staging / sample_file(b), **arrays)
        self.samples.append({"sample": b, "file": sample_file(b),
                             "matched": all(c["matched"] for c in compared.values()), "layers": compared})

    def finish(self, meta: dict) -> dict:
        """Write ``index.json`` (``meta`` first) and put the folder in place; return the index."""
        per_layer = {}
        for name in self.layers:
            rows = [(s["sample"], s["layers"][name]) for s in self.samples if name in s["layers"]]
            bad = [b for b, c in rows if not c["matched"]]
            per_layer[name] = {"shape": rows[0][1]["shape"], "samples_matched": len(rows) - len(bad),
                               "mismatched_samples": bad[:20]}
        bad = [s["sample"] for s in self.samples if not s["matched"]]
        index = {"schema_version": SCHEMA_VERSION, **meta, "samples": len(self.samples), "matched": not bad,
                 "mismatched_samples": bad[:20], "layers": self.layers, "per_layer": per_layer,
                 "per_sample": self.samples}
        (self.staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.staging, 0o777 & ~umask)      # mkdtemp made it private; the folder gets the usual mode
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.resolve().parent))
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return index

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def load(folder: str | Path, b: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(hardware, golden)`` arrays by layer name of sample ``b`` of a trace folder."""
    hw, golden = {}, {}
    with np.load(Path(folder) / sample_file(b), allow_pickle=False) as f:
        for key in f.files:
            side, _, name = key.partition("/")
            if side == "hardware":
                hw[name] = f[key]
            elif side == "golden":
                golden[name] = f[key]
    return hw, golden
