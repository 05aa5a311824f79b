"""``python -m compiler simulate``: run the overlay with the model's program cycle-accurately, through the host
driver a board gets, and compare it, bit for bit, with the integer golden model."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim import cache

from ..errors import UserError
from ..ir import golden, metrics
from . import trace_dir as trace_dir_flow


def check_build_dir(path: str | Path) -> None:
    """UserError unless ``path`` is a folder that simulator builds can be written into (created if need be)."""
    path = Path(path)
    try:
        cache.keep_count()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=path).cleanup()
    except OSError as exc:
        raise UserError(f"--build-dir {path}: cannot write simulator builds there "
                        f"({exc.strerror or exc})") from None


class BuildClock:
    """The ``progress`` of a Verilator build (:func:`sim.verilator_host.verilate`): on stderr, when shown, one
    line ``building WHAT: N s`` rewritten every second while the build runs, then ``built WHAT in N s``.
    Nothing when the binary is cached (the callback is never called)."""

    def __init__(self, what: str, show: bool):
        self.what, self.show, self.seconds = what, show, None

    def __call__(self, seconds: float) -> None:
        first, self.seconds = self.seconds is None, seconds
        if not self.show:
            return
        if sys.stderr.isatty():
            sys.stderr.write(f"\rbuilding {self.what}: {seconds:.0f} s (once per design; cached in --build-dir)")
        elif first or int(seconds) % 15 == 0:      # a log: one line at the start, then every 15 s
            sys.stderr.write(f"building {self.what}: {seconds:.0f} s (once per design; cached in --build-dir)\n")
        sys.stderr.flush()

    def __enter__(self) -> "BuildClock":
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        if self.show and self.seconds is not None:
            pad = " " * 40 if sys.stderr.isatty() else ""
            sys.stderr.write(f"\rbuilt {self.what} in {time.monotonic() - self._t0:.0f} s{pad}\n")
            sys.stderr.flush()


class LazyBar:
    """A tqdm bar that appears at its first update (after a build's clock, not under it)."""

    def __init__(self, **kwargs):
        self._kwargs, self._bar = kwargs, None

    def update(self, n: int = 1) -> None:
        if self._bar is None:
            self._bar = tqdm(**self._kwargs)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


#: ``--waveform``: the formats by file name suffix (:data:`sim.verilator_host.WAVEFORMS`).
WAVEFORM_SUFFIXES = {".fst": "fst", ".vcd": "vcd"}


def check_waveform(path: str, force: bool) -> str:
    """The format of ``--waveform path`` (``fst`` or ``vcd``); UserError, before any work, for another suffix or a
    file that cannot be written (its folder must exist; an existing file is replaced only with ``force``)."""
    from ..frontend import checkpoint

    if not str(path).strip():
        raise UserError("--waveform is an empty path")
    suffix = Path(path).suffix.lower()
    if suffix not in WAVEFORM_SUFFIXES:
        raise UserError(f"--waveform {path}: the file name must end in .fst or .vcd (the format written), not "
                        f"{suffix or 'nothing'}")
    checkpoint.check_output(path, force=force, flag="--waveform", what="waveform file")
    if suffix == ".fst" and not fst_writer_available():
        raise UserError(f"--waveform {path}: Verilator's FST writer needs the LZ4 headers, which the C++ compiler "
                        f"does not find (Debian/Ubuntu: apt install liblz4-dev); or write a .vcd")
    return WAVEFORM_SUFFIXES[suffix]


def fst_writer_available() -> bool:
    """Whether the C++ compiler finds ``lz4.h``, which Verilator's FST writer includes (a package of the system's,
    e.g. Debian's ``liblz4-dev``, not of Python's)."""
    import shutil
    import subprocess

    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        return False
    try:
        done = subprocess.run([cxx, "-fsyntax-only", "-x", "c++", "-"], input="#include <lz4.h>\n", text=True,
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class _WaveFile:
    """A temporary file beside ``path`` for the simulator to write, renamed into place by :meth:`keep`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)

    def keep(self) -> int:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        return self.path.stat().st_size

    def drop(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _waveform(path, fmt: str, run_one) -> dict:
    """``run_one(file)`` writes the waveform of sample 0 into ``file`` and returns its cycles; the report's
    ``waveform`` object."""
    wave = _WaveFile(path)
    try:
        cycles = run_one(wave.tmp)
        size = wave.keep()
    except BaseException:
        wave.drop()
        raise
    return {"file": str(path), "format": fmt, "sample": 0, "cycles": int(cycles), "bytes": size,
            "time_per_cycle_ns": 10}


def _meta(report: dict) -> dict:
    """What a trace folder's index says of the simulation it holds."""
    return {k: report[k] for k in ("simulator", "schedule", "lanes", "model_id")}


def run(graph, x: np.ndarray, *, lanes: int, trace: bool, build_dir: str, show_progress: bool,
        trace_dir: str | Path | None = None, force: bool = False, waveform: str | Path | None = None,
        post_lanes: int | None = None, weight_store: int | None = None, param_store: int | None = None,
        simulator: str = "verilator", dense: bool = False) -> dict:
    """Compile ``graph`` (with ``dense``, as a dense program: every lane an event, zeros too, the baseline of
    the event-driven schedule) for the smallest overlay configuration of ``lanes`` lanes (and a post unit of
    ``post_lanes``; 0: all lanes; None: the boards' standard, ``compiler.hw.overlay_config.standard_post_lanes``), run every sample of ``x`` on
    the Verilated overlay through the host driver (``compiler.host.npu.NpuDriver``, the one a board gets) and
    compare its logits -- with ``trace``, every stored tensor -- with the golden model's, and its cycles with
    the descriptors' cycle formula. With ``trace_dir`` (implies ``trace``) every stored tensor of every sample
    is saved there (:mod:`compiler.flows.trace_dir`); with ``waveform`` (``.fst`` or ``.vcd``) every signal of
    the program's load and the first sample's inference. ``weight_store``: a weight store of that many words
    and ``param_store``: parameter memories of that many lane groups (``compiler.hw.program.fit_config``); if
    either overflows, the weights and parameters stream from the SDRAM, simulated as LiteDRAM's controller on
    the device model (``sim.npu_sdram``; no waveform then). ``simulator`` ``icarus``: the program on Icarus
    Verilog in a cocotb bench (:mod:`compiler.flows.cocotb_npu`), the same driver's coroutines; logits only (no trace,
    waveform or SDRAM)."""
    check_simulator(simulator, trace=trace or trace_dir is not None, waveform=waveform, weight_store=weight_store)
    if weight_store is not None and waveform is not None:
        raise UserError("--waveform is not written for an overlay with its weights in SDRAM (--weight-store)")
    if post_lanes is None:
        from ..hw.overlay_config import standard_post_lanes
        post_lanes = standard_post_lanes(lanes)
    return _with_trace_dir(trace_dir, force, trace, lambda trace, writer: _run(
        graph, x, lanes=lanes, trace=trace, build_dir=build_dir, show_progress=show_progress, writer=writer,
        waveform=waveform, post_lanes=post_lanes, weight_store=weight_store, param_store=param_store,
        simulator=simulator, dense=dense))


#: The simulators the overlay runs in: the C++ harness, and Icarus in a cocotb bench.
SIMULATORS = ("verilator", "icarus")


def check_simulator(simulator: str, *, trace: bool = False, waveform=None, weight_store=None) -> None:
    """UserError (before any work) for a simulator the overlay does not run in, or an option only the
    Verilator harness has."""
    if simulator not in SIMULATORS:
        raise UserError(f"the overlay runs in verilator or icarus, not {simulator}")
    if simulator != "verilator":
        for flag, given in (("--trace", trace), ("--waveform", waveform is not None),
                            ("--weight-store", weight_store is not None)):
            if given:
                raise UserError(f"{flag} is the Verilator harness's: drop --simulator {simulator}")


def _with_trace_dir(trace_dir, force: bool, trace: bool, run) -> dict:
    """``run(trace, writer)``'s report, with every layer of every sample saved into ``trace_dir`` (then
    ``trace`` is on; None: no writer) and the report's ``trace_dir``; the folder is left unwritten if ``run``
    raises."""
    writer = None
    if trace_dir is not None:
        trace = True
        writer = trace_dir_flow.TraceWriter(Path(trace_dir), force)
    try:
        report = run(trace, writer)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    report["trace_dir"] = None
    if writer is not None:
        writer.finish(_meta(report))
        report["trace_dir"] = str(writer.out)
    return report


def run_program(graph, x: np.ndarray, program, *, build_dir: str, show_progress: bool = False) -> dict:
    """``program`` (``graph`` compiled for a configuration, as a build compiles it for a board's) on the
    Verilated overlay of its configuration, every sample of ``x`` through the host driver, against the golden
    model: ``simulate``'s report without a trace."""
    return _run(graph, x, lanes=program.config.lanes, trace=False, build_dir=build_dir,
                        show_progress=show_progress, writer=None, program=program)


def _logit_difference(graph, got: np.ndarray, want: np.ndarray) -> dict | None:
    """The first logit where ``got`` differs from the golden ``want``, as ``first_mismatch``'s keys, or None."""
    if np.array_equal(got, want):
        return None
    k = int(np.flatnonzero(got != want)[0])
    return {"tensor": graph.output, "position": [k], "hardware": int(got[k]), "golden": int(want[k])}


def _on_cocotb(program, x: np.ndarray, build_dir: str, simulator: str):
    """Every sample on the overlay in a cocotb bench (:mod:`compiler.flows.cocotb_npu`): ``(logits, cycles,
    stats)``."""
    from .cocotb_npu import run_program as run_in_cocotb

    logits, cycles, simulated, seconds = run_in_cocotb(program, x, build_dir, simulator=simulator)
    return logits, cycles, {"cycles": simulated, "seconds": seconds}


def _on_verilator(graph, x: np.ndarray, program, ref_logits, ref_env, *, trace: bool, build_dir: str,
                  show_progress: bool, writer):
    """Every sample on the Verilated overlay through the host driver, each compared with the golden model (with
    ``trace``, every stored tensor, saved by ``writer`` if given): ``(logits, cycles, first_mismatch,
    mismatched samples, stats)``."""
    from hdl.npu.bus import OverlayBus
    from sim import npu_sdram, verilator_host

    from ..host.npu import NpuDriver

    streamed = program.ext is not None
    what = (f"the Verilator model of the overlay ({program.config.lanes} lanes"
            f"{', weights in SDRAM' if streamed else ''})")
    with BuildClock(what, show_progress) as clock:
        if streamed:
            binary = npu_sdram.build(program.config, build_dir, words=len(program.ext_image()), progress=clock)
        else:
            binary = verilator_host.build(OverlayBus(program.config), build_dir,
                                          key=("OverlayBus", program.config), progress=clock)
    logits = np.zeros((len(x), program.classes), np.int64)
    cycles = np.zeros(len(x), np.int64)
    first, mismatched = None, []
    bar = tqdm(total=len(x), desc="simulate", unit="sample", disable=not show_progress, leave=False)
    t1 = time.monotonic()
    with verilator_host.Session(binary) as bus:
        driver = NpuDriver(bus)
        driver.load(program)
        for b, sample in enumerate(x):
            logits[b], cycles[b] = driver.infer(sample)
            diff = None
            if trace:
                layers = []
                for layer in program.layers:
                    if layer.dst is None:
                        continue
                    got = driver.read_tensor(layer.dst)
                    want = ref_env[layer.dst][b]
                    want = want[:got.shape[0]].reshape(got.shape)
                    layers.append((layer.dst, got, want))
                    if diff is None and not np.array_equal(got, want):
                        pos = tuple(int(i) for i in np.argwhere(got != want)[0])
                        diff = {"tensor": layer.dst, "position": list(pos), "hardware": int(got[pos]),
                                "golden": int(want[pos])}
                        if writer is None:
                            break
                if writer is not None:
                    writer.add(b, sample, layers, logits[b], ref_logits[b])
            diff = diff or _logit_difference(graph, logits[b], ref_logits[b])
            if diff is not None:
                mismatched.append(b)
                first = first or {"sample": b, **diff}
            bar.update()
    bar.close()
    stats = {"seconds": time.monotonic() - t1, **(bus.stats or {})}
    return logits, cycles, first, mismatched, stats


def _run(graph, x: np.ndarray, *, lanes: int, trace: bool, build_dir: str, show_progress: bool,
         writer, waveform=None, post_lanes: int = 0, weight_store: int | None = None,
         param_store: int | None = None, program=None, simulator: str = "verilator",
         dense: bool = False) -> dict:
    from hdl.npu.bus import OverlayBus
    from hdl.npu.regmap import AddressMap
    from sim import npu_sdram, verilator_host

    from ..host.npu import NpuDriver
    from ..hw.program import compile_program, fit_config, total_events

    if program is None:
        config = fit_config(graph, lanes, keep=trace, post_lanes=post_lanes, weight_store=weight_store,
                            param_store=param_store)
        program = compile_program(graph, config, keep=trace, dense=dense)
        try:
            AddressMap(config)
        except ValueError as exc:               # the host link's 24-bit addresses: a post unit's word is widest
            raise UserError(f"the overlay fitted to this model: {exc}"
                            + (" (or a narrower post unit: --post-lanes 4)" if config.post_width > 4 else "")
                            ) from None
    t0 = time.monotonic()
    streamed = program.ext is not None
    ref_logits, ref_env = golden.run(graph, x, trace=True)
    events = [program.events(x[b:b + 1]) for b in range(len(x))]
    if simulator != "verilator":                # a cocotb bench: the driver's coroutines, logits compared
        logits, cycles, stats = _on_cocotb(program, x, build_dir, simulator)
        mismatched = [b for b in range(len(x)) if _logit_difference(graph, logits[b], ref_logits[b])]
        first = None
        if mismatched:
            b = mismatched[0]
            first = {"sample": b, **_logit_difference(graph, logits[b], ref_logits[b])}
    else:
        logits, cycles, first, mismatched, stats = _on_verilator(
            graph, x, program, ref_logits, ref_env, trace=trace, build_dir=build_dir, show_progress=show_progress,
            writer=writer)
    wall = time.monotonic() - t0
    wave = None
    if waveform is not None:
        fmt = WAVEFORM_SUFFIXES[Path(waveform).suffix.lower()]

        def run_one(file: Path) -> int:
            with BuildClock(f"the Verilator model of the overlay with {fmt} tracing ({lanes} lanes)",
                            show_progress) as clock:
                traced = verilator_host.build(OverlayBus(program.config), build_dir,
                                              key=("OverlayBus", program.config), progress=clock, waveform=fmt)
            with verilator_host.Session(traced, env={verilator_host.WAVEFORM_ENV: str(file)}) as session:
                one = NpuDriver(session)
                one.load(program)
                got, cyc = one.infer(x[0])
            if not np.array_equal(got, logits[0]) or cyc != cycles[0]:   # the same design, traced: a bug otherwise
                raise RuntimeError("the traced simulation of sample 0 differs from the simulation")
            return int(session.stats["cycles"]) if session.stats else int(cyc)

        wave = _waveform(waveform, fmt, run_one)
    modelled = np.array([sum(program.cycles(e)) for e in events])
    external = None
    if streamed:
        placement = [program.weight_placement(e) for e in events]
        external = {**placement[0], "compute_cycles": float(np.mean([p["compute_cycles"] for p in placement])),
                    "controller": f"LiteDRAM on the {npu_sdram.MT48LC16M16A2.name} device model at "
                                  f"{npu_sdram.CLOCK_MHZ:g} MHz"}
    synops = metrics.summarize(graph, x, 0)["synaptic_ops"]["effective"]
    ops_per_cycle = float(synops / cycles.mean())
    seconds = float(stats["seconds"])
    return {
        "samples": int(len(x)),
        "mismatches": len(mismatched),
        "mismatched_samples": mismatched[:20],
        "first_mismatch": first,
        "simulator": simulator,
        "schedule": "overlay",
        "dense": any(d.dense for d in program.descriptors),
        "lanes": lanes,
        "model_id": f"{program.model_id:08x}",
        "cycles_per_inference": float(cycles.mean()),
        "cycles_min": int(cycles.min()),
        "cycles_max": int(cycles.max()),
        "cycles_modelled_per_inference": float(modelled.mean()),
        "cycle_model_error": float(np.abs(modelled - cycles).max()),
        "spike_events_per_inference": float(np.mean([total_events(e) for e in events])),
        "synaptic_ops_per_inference": float(synops),
        "ops_per_cycle": ops_per_cycle,
        "ops_per_cycle_ceiling": lanes,
        "lane_utilization": ops_per_cycle / lanes,
        "classes": [int(c) for c in logits.argmax(axis=1)[:20]],
        "simulated_cycles": int(stats.get("cycles", int(cycles.sum()))),
        "simulator_seconds": seconds,
        "simulated_cycles_per_second": float(stats.get("cycles", cycles.sum()) / max(seconds, 1e-9)),
        "wall_seconds": wall,
        "traced": trace,
        "config": program.config.__dict__.copy(),
        "external_memory": external,
        "waveform": wave,
    }


def print_report(r: dict) -> None:
    verdict = "bit-exact" if r["mismatches"] == 0 else f"{r['mismatches']} MISMATCHING"
    dense = " (dense: every lane an event)" if r.get("dense") else ""
    print(f"{r['samples']} samples on the {r['schedule']} accelerator{dense} ({r['lanes']} lanes, model id "
          f"{r['model_id']}), "
          f"{r['simulator']}: {verdict} against the golden model"
          + (" (every layer traced)" if r["traced"] else " (logits)"))
    if r["first_mismatch"]:
        f = r["first_mismatch"]
        print(f"  first difference: sample {f['sample']}, {f['tensor']} at {tuple(f['position'])}: "
              f"hardware {f['hardware']}, golden {f['golden']}")
    print(f"  cycles per inference:    {r['cycles_per_inference']:,.0f} (min {r['cycles_min']:,}, "
          f"max {r['cycles_max']:,})")
    if "cycles_modelled_per_inference" in r:
        print(f"  cycle model:             {r['cycles_modelled_per_inference']:,.0f} per inference (largest "
              f"difference from the simulation: {r['cycle_model_error']:,.0f} cycles)")
    ext = r.get("external_memory")
    if ext:
        what = " and ".join(w for w, where in (("weights", ext["placement"]), ("parameters", ext["parameters"]))
                            if where != "on chip")
        print(f"  streamed from SDRAM:     {ext['streamed_words']:,} words of {what} in {ext['fetches']} fetches "
              f"(a {ext['weight_store_words']:,}-word weight store; {ext['controller']})")
        bound = max(ext["compute_cycles"], ext["sdram_bound_cycles"])
        print(f"  bounds:                  compute {ext['compute_cycles']:,.0f} cycles, SDRAM bandwidth "
              f"{ext['sdram_bound_cycles']:,.0f}: the simulation took {r['cycles_per_inference'] / bound:.2f}x the "
              "larger")
    print(f"  {'events (every lane)' if dense else 'spike events':<24} {r['spike_events_per_inference']:,.0f} per "
          "inference")
    print(f"  synaptic operations:     {r['synaptic_ops_per_inference']:,.0f} per inference")
    print(f"  operations per cycle:    {r['ops_per_cycle']:.2f} of a {r['ops_per_cycle_ceiling']}-lane ceiling "
          f"({r['lane_utilization']:.1%})")
    if r.get("waveform"):
        w = r["waveform"]
        print(f"  waveform:                sample {w['sample']} ({w['cycles']:,} cycles, 10 ns each) in {w['file']} "
              f"({w['format']}, {w['bytes']:,} bytes)")
    if r.get("trace_dir"):
        print(f"  traces:                  every stored layer of every sample, hardware and golden, in "
              f"{r['trace_dir']} (index.json)")
    print(f"  simulation speed:        {r['simulated_cycles_per_second']:,.0f} cycles/s "
          f"({r['simulated_cycles']:,} cycles in {r['simulator_seconds']:.1f} s; {r['wall_seconds']:.1f} s "
          f"with the build)")
