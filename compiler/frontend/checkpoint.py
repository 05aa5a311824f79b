"""``model.pt``: save and load a QSD-Transformer checkpoint, refusing anything else loudly."""

from __future__ import annotations

import os
import pickle
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch

from .config import ModelConfig
from ..errors import UserError
from .model import QSDTransformer

FORMAT = "qsd-transformer"
VERSION = 1


def save(model: QSDTransformer, path: str | os.PathLike, history: dict | None = None) -> None:
    """Write ``{"format", "version", "config", "dataset", "state_dict"}`` (and ``"history"``, the training
    history: plain dicts, lists, strings and numbers, see ``docs/cli.md``) atomically (no half-written file)."""
    if history is not None and not _plain(history):
        raise TypeError("a checkpoint's history must be made of dicts, lists, strings, numbers and None")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "dataset": model.dataset,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if history is not None:
        payload["history"] = history
    write_atomic(path, lambda f: torch.save(payload, f))


def check_output(path: str | os.PathLike, force: bool = False, *, flag: str = "--out", what: str = "model file") -> None:
    """UserError unless a checkpoint (or any output file: ``what``, given by option ``flag``) can be written at
    ``path``, checked before any work: its folder exists and takes a file of this name, and ``path`` is new (or,
    with ``force``, a regular file to replace; never a folder, a symlink, a FIFO or a device)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink():
            raise UserError(f"{path}: is a folder; give the path of the {what} to write")
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise UserError(f"{path}: exists and is not a regular file (a symlink, FIFO or device); give another "
                            f"{flag}")
        if not force:
            raise UserError(f"{path}: exists; give --force to replace it, or another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path: str | os.PathLike) -> QSDTransformer:
    """Load ``path`` with ``weights_only=True`` and rebuild the model, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if any(s in text for s in _CODE_EXECUTION_REFUSALS):
            raise UserError(f"{path}: refused to load: the file needs arbitrary code execution to unpickle "
                            "(only plain tensors and containers are accepted)") from None
        # torch wraps the unpickler's own message in paragraphs of advice: keep only that message
        parts = [p.strip() for p in text.split("\n\n") if p.strip()
                 and not p.strip().startswith(("Weights only load failed", "Check the documentation"))]
        detail = parts[-1].splitlines()[0] if parts else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint ({detail})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint ({msg})") from None
    return from_payload(payload, str(path))


# What torch's weights-only unpickler says when a pickle wants to import or call something (code execution);
# anything else it refuses ("Unsupported operand 95", ...) is a file that is not a pickle at all.
_CODE_EXECUTION_REFUSALS = ("GLOBAL", "call reduce", "Can only create new object", "Can only build")


#: torch.save stores its records uncompressed: an archive that declares far more than its size is refused
#: before anything is unpacked.
MAX_UNPACKED_RATIO = 16


def _check_archive(path: Path) -> None:
    """Verify the CRC-32 of every record of a zip checkpoint: torch.load does not, so a flipped byte in a
    tensor would otherwise load silently as different weights. (Records saved without a CRC are skipped.)"""
    if not zipfile.is_zipfile(path):
        return                              # not a zip: torch.load says what is wrong with it
    try:
        with zipfile.ZipFile(path) as archive:
            declared, on_disk = sum(i.file_size for i in archive.infolist()), path.stat().st_size
            if declared > MAX_UNPACKED_RATIO * on_disk and declared > 64 << 20:
                raise UserError(f"{path}: refused: the archive unpacks to {declared / 2**20:,.0f} MiB from "
                                f"{on_disk / 2**20:,.1f} MiB (torch.save stores tensors uncompressed; a zip bomb?)")
            for info in archive.infolist():
                if info.CRC and not info.is_dir():
                    with archive.open(info) as f:       # raises BadZipFile on a CRC mismatch at the end
                        while f.read(1 << 20):
                            pass
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint (corrupt archive: {msg})") from None


def _plain(value, depth: int = 0) -> bool:
    """Whether ``value`` is JSON's kind of data (dicts with string keys, lists, strings, numbers, None)."""
    if depth > 8:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def training_history(model: QSDTransformer) -> dict | None:
    """The training history a loaded checkpoint holds (``train`` saves one), or None (an older checkpoint)."""
    return getattr(model, "training_history", None)


def from_payload(payload, where: str) -> QSDTransformer:
    if not isinstance(payload, dict) or "format" not in payload:
        raise UserError(f"{where}: not a {FORMAT} checkpoint (no 'format' key)")
    if payload["format"] != FORMAT:
        raise UserError(f"{where}: unknown format {payload['format']!r} (expected {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise UserError(f"{where}: unsupported {FORMAT} version {payload.get('version')!r} (supported: {VERSION})")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise UserError(f"{where}: checkpoint has no {key!r}")
    try:
        cfg = ModelConfig.from_dict(payload["config"])
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None           # say which file holds the bad configuration
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{where}: 'state_dict' must map names to tensors")
    for name, tensor in state.items():
        if tensor.layout != torch.strided or tensor.is_meta or tensor.is_complex() or tensor.is_quantized:
            raise UserError(f"{where}: {name} must be a dense real tensor with data, not a "
                            f"{'meta' if tensor.is_meta else str(tensor.layout).removeprefix('torch.')} "
                            f"{str(tensor.dtype).removeprefix('torch.')} one")
    dataset = payload.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise UserError(f"{where}: 'dataset' must be a name, not {type(dataset).__name__}")
    record = payload.get("history")
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("epochs", []), list)
                                   and _plain(record)):
        raise UserError(f"{where}: 'history' must be a dict of plain numbers and lists (the training history)")
    with torch.device("meta"):                  # names and shapes only: no memory before they match
        expected = QSDTransformer(cfg, dataset).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{where}: state_dict does not match its config ({detail})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise UserError(f"{where}: {name} has shape {tuple(tensor.shape)}, "
                            f"the config needs {tuple(expected[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{where}: {name} contains NaN or infinite values")
    model = QSDTransformer(cfg, dataset)
    model.load_state_dict(state)
    model.eval()
    model.training_history = record            # None for a checkpoint saved without one
    return model
