"""``python -m compiler clean``: remove the simulators' caches (and, asked for, the calibration's).

What is a cache, and where (nothing else is touched, whatever the folder holds besides):

- a simulation cache folder (``simulate --build-dir``, default ``build/sim``; ``build`` uses ``build/sim`` too;
  the test suite ``build/test-sim``), as :mod:`sim.verilator_host` and :mod:`sim.cocotb_run` fill it:
  ``<prefix>-<16 hex digits>/`` (a Verilated binary, ``verilator-*`` or ``uart-sim-*``, cached by the hash of
  its Verilog, or of what makes it (:mod:`sim.cache`), and its harness), ``.<prefix>-<hash>-*/`` (the staging
  folder of a build that was interrupted) and
  ``icarus/`` (the cocotb build of ``--simulator icarus``);
- with ``calibrate``, ``build/calibrate/synth/`` and ``build/calibrate/models/`` (0.1's ``bench.calibrate``'s Yosys
  statistics and its synthetic models: an hour of synthesis to make again).

A binary whose build lock is held (a simulation building it now) is skipped, and so is a staging folder of a
build in progress; the cocotb folder is emptied under its own lock, except the ``run-*`` folders of the runs
that may be waiting for it. The empty ``.lock`` files stay: a simulation that waits on one must keep seeing
the file it waits on. ``run/`` (each Verilator run's own folder, removed by the run itself) is not touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

#: The simulation caches cleaned by default: ``simulate``'s and ``build``'s (``build.SIM_DIR``), the tests'.
SIM_CACHES = ("build/sim", "build/test-sim")
CALIBRATE_CACHE = "build/calibrate"
_BINARY = re.compile(r"^(?P<key>[a-z][a-z0-9_-]*-[0-9a-f]{16})$")
_STAGING = re.compile(r"^\.(?P<key>[a-z][a-z0-9_-]*-[0-9a-f]{16})-.+$")


@dataclass(frozen=True)
class Entry:
    path: Path
    bytes: int
    kind: str               # "simulator binary", "interrupted build", "icarus build", "calibration"


def size_of(path: Path) -> int:
    """Bytes of the files under ``path`` (not following symbolic links; a link counts as its own size)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return os.lstat(path).st_size
    except FileNotFoundError:
        return 0
    total = 0
    for folder, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


@contextlib.contextmanager
def _lock(path: Path):
    """Yield True holding ``path``'s flock (True too when there is no lock file: nobody holds it), False if
    another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                yield False
                return
            raise
        yield True
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _sim_cache(folder: Path, dry_run: bool, done: list[Entry], skipped: list[dict]) -> None:
    for path in sorted(folder.iterdir()):
        name = path.name
        binary, staging = _BINARY.match(name), _STAGING.match(name)
        if (binary or staging) and path.is_dir() and not path.is_symlink():
            key = (binary or staging)["key"]
            kind = "simulator binary" if binary else "interrupted build"
            with _lock(folder / f"{key}.lock") as free:
                if not free:
                    skipped.append({"path": str(path), "reason": "a simulator build holds its lock (in progress)"})
                    continue
                entry = Entry(path, size_of(path), kind)
                if not dry_run:
                    _remove(path)
                done.append(entry)
        elif name == "icarus" and path.is_dir() and not path.is_symlink():
            with _lock(path / ".lock") as free:
                if not free:
                    skipped.append({"path": str(path), "reason": "an icarus simulation holds its lock (running)"})
                    continue
                children = [c for c in sorted(path.iterdir()) if c.name != ".lock" and not c.name.startswith("run-")]
                if not children:
                    continue
                entry = Entry(path, sum(size_of(c) for c in children), "icarus build")
                if not dry_run:
                    for child in children:
                        _remove(child)
                done.append(entry)


def _calibrate_cache(folder: Path, dry_run: bool, done: list[Entry]) -> None:
    for name in ("synth", "models"):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            entry = Entry(path, size_of(path), "calibration")
            if not dry_run:
                _remove(path)
            done.append(entry)


def _folder(text: str) -> Path:
    path = Path(text)
    if not str(text).strip():
        raise UserError("--build-dir is an empty path")
    if not path.exists():
        raise UserError(f"--build-dir {text}: no such folder")
    if not path.is_dir():
        raise UserError(f"--build-dir {text}: not a folder")
    return path


def run(build_dirs: list[str] | None = None, *, calibrate: bool = False, dry_run: bool = False) -> tuple[dict, int]:
    """Remove (``dry_run``: only list) the caches; ``(report, 0)``. ``build_dirs``: the simulation caches to
    clean instead of :data:`SIM_CACHES` (each must be a folder; the defaults are skipped when absent)."""
    folders = [_folder(d) for d in build_dirs] if build_dirs else [Path(d) for d in SIM_CACHES if Path(d).is_dir()]
    done: list[Entry] = []
    skipped: list[dict] = []
    try:
        for folder in folders:
            _sim_cache(folder, dry_run, done, skipped)
        if calibrate and Path(CALIBRATE_CACHE).is_dir():
            folders.append(Path(CALIBRATE_CACHE))
            _calibrate_cache(Path(CALIBRATE_CACHE), dry_run, done)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        freed = sum(e.bytes for e in done)
        raise UserError(f"cannot remove{where}: {exc.strerror or exc} (removed {len(done)} entries, "
                        f"{freed:,} bytes, before it)") from None
    return {
        "dry_run": dry_run,
        "folders": [str(f) for f in folders],
        "entries": [{"path": str(e.path), "kind": e.kind, "bytes": e.bytes} for e in done],
        "bytes": sum(e.bytes for e in done),
        "skipped": skipped,
    }, 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def print_report(r: dict) -> None:
    verb = "would remove" if r["dry_run"] else "removed"
    for e in r["entries"]:
        print(f"{verb} {e['path']} ({e['kind']}, {_size(e['bytes'])})")
    for s in r["skipped"]:
        print(f"kept {s['path']}: {s['reason']}")
    where = ", ".join(r["folders"]) or "no cache folder here"
    print(f"{verb} {len(r['entries'])} entr{'y' if len(r['entries']) == 1 else 'ies'}, {r['bytes']:,} bytes "
          f"({_size(r['bytes'])}) from {where}" + (f"; kept {len(r['skipped'])} in use" if r["skipped"] else ""))
