"""Run the generated accelerator on samples, cycle-accurately, through its host bus.

Every simulator executes the same host-bus script (``sim.verilator_host.Script``): per sample, the pixels
are written, an inference is started and waited for, then the logits and counters are read; with
``trace`` the controller pauses after each time step and every buffer is read. The script runs in C++
(Verilator, ``sim.verilator_host``), in a cocotb bench (Icarus or Verilator, ``sim.cocotb_script``) or in
the Amaranth simulator; none of them steps cycles from Python except the last two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from amaranth.sim import Simulator

from hdl import regmap
from hdl.accelerator import Accelerator
from hdl.hostbus import READ_LATENCY

from . import verilator_host
from .verilator_host import Script

SIMULATORS = ("verilator", "icarus", "amaranth")
_COUNTERS = (regmap.REG_CYCLES_LO, regmap.REG_CYCLES_HI, regmap.REG_EVENTS, regmap.REG_SYNOPS_LO,
             regmap.REG_SYNOPS_HI, regmap.REG_ID)


@dataclass
class SimResult:
    logits: np.ndarray                 # [B, K] int64
    cycles: np.ndarray                 # [B] cycles from start to done (hardware counter)
    events: np.ndarray                 # [B] non-zero spike events consumed
    synops: np.ndarray                 # [B] synaptic operations scheduled
    model_id: int
    simulated_cycles: int              # every cycle the simulator ran (loading and reading included)
    seconds: float                     # simulator time
    trace: list[dict[str, np.ndarray]] = field(default_factory=list)   # per sample: tensor -> [T, N, C]

    @property
    def cycles_per_second(self) -> float:
        return self.simulated_cycles / self.seconds if self.seconds > 0 else float("inf")


def _trace_buffers(plan):
    return [(i, b) for i, b in enumerate(plan.buffers.values()) if b.kind != "pixels"]


def _chunks(buf) -> int:
    return -(-buf.word_width // 32)


def script_for(plan, x: np.ndarray, trace: bool = False) -> Script:
    """The host-bus script of one sample."""
    s = Script()
    offsets, values = plan.input_words(x)
    base = regmap.address(regmap.REGION_PIXELS)
    for o, v in zip(offsets.tolist(), values.tolist()):
        s.write(base | o, v)
    s.write(regmap.REG_CTRL, regmap.CTRL_START)
    for step in range(plan.timesteps):
        last = step == plan.timesteps - 1
        flag = regmap.STATUS_DONE if last else regmap.STATUS_PAUSED
        if trace or last:
            s.wait(regmap.REG_STATUS, flag, flag)
        if trace:
            for index, buf in _trace_buffers(plan):
                cb = (_chunks(buf) - 1).bit_length()
                for w in range(buf.depth):
                    for c in range(_chunks(buf)):
                        s.read(regmap.trace_address(index, w, c, cb))
            if not last:
                s.write(regmap.REG_CTRL, regmap.CTRL_CONTINUE)
    for k in range(2 * plan.classes):
        s.read(regmap.address(regmap.REGION_LOGITS, k))
    for reg in _COUNTERS:
        s.read(reg)
    return s


def _decode(plan, reads: np.ndarray, trace: bool):
    """Split one sample's reads into (trace tensors, logits, counters)."""
    pos = 0
    tensors: dict[str, list[np.ndarray]] = {}
    if trace:
        for _ in range(plan.timesteps):
            for _, buf in _trace_buffers(plan):
                n = buf.depth * _chunks(buf)
                raw = reads[pos:pos + n].astype(object).reshape(buf.depth, _chunks(buf))
                pos += n
                words = [sum(int(raw[w, c]) << (32 * c) for c in range(_chunks(buf))) for w in range(buf.depth)]
                tensors.setdefault(buf.name, []).append(buf.unpack(words))
    lw = reads[pos:pos + 2 * plan.classes].astype(np.uint64)
    pos += 2 * plan.classes
    logits = (lw[0::2] | (lw[1::2] << np.uint64(32))).view(np.int64)
    c = [int(v) for v in reads[pos:pos + len(_COUNTERS)]]
    counters = {"cycles": c[0] | c[1] << 32, "events": c[2], "synops": c[3] | c[4] << 32, "model_id": c[5]}
    return {k: np.stack(v) for k, v in tensors.items()}, logits, counters


def _run_amaranth(accel, script: Script) -> tuple[np.ndarray, int, float]:
    words = script.words
    reads: list[int] = []
    cycles = 0

    async def bench(ctx):
        nonlocal cycles
        bus = accel.bus

        async def tick():
            nonlocal cycles
            await ctx.tick()
            cycles += 1

        async def read(addr):
            ctx.set(bus.addr, addr)
            ctx.set(bus.re, 1)
            await tick()
            ctx.set(bus.re, 0)
            for _ in range(READ_LATENCY - 1):
                await tick()
            return ctx.get(bus.rdata)

        pc = 0
        while pc < len(words):
            op = words[pc]
            if op == verilator_host.OP_WRITE:
                ctx.set(bus.addr, words[pc + 1])
                ctx.set(bus.wdata, words[pc + 2])
                ctx.set(bus.we, 1)
                await tick()
                ctx.set(bus.we, 0)
                pc += 3
            elif op == verilator_host.OP_READ:
                reads.append(await read(words[pc + 1]))
                pc += 2
            elif op == verilator_host.OP_WAIT:
                addr, mask, value, limit = words[pc + 1:pc + 5]
                start = cycles
                while (await read(addr)) & mask != value:
                    if cycles - start > limit:
                        raise RuntimeError(f"timeout: register {addr} never matched")
                pc += 5
            else:
                await ctx.tick().repeat(words[pc + 1])
                cycles += words[pc + 1]
                pc += 2

    sim = Simulator(accel)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    t0 = time.monotonic()
    sim.run()
    return np.array(reads, dtype=np.uint32), cycles, time.monotonic() - t0


def design_key(plan, trace: bool = False, clock_gating: bool = True, ecp5: bool = False) -> tuple:
    """What determines the Verilog of ``Accelerator(plan, trace=..., ecp5=..., clock_gating=...)``: the key of
    its cached simulator binaries (:func:`sim.verilator_host.verilate`)."""
    return ("Accelerator", plan, bool(trace), bool(ecp5), bool(clock_gating))


def simulate(plan, inputs: np.ndarray, *, simulator: str = "verilator", trace: bool = False,
             build_dir: str | Path = "build/sim", batch: int = 64, clock_gating: bool = True,
             progress: Callable[[int], None] | None = None,
             build_progress: Callable[[float], None] | None = None,
             waveform: tuple[str, str | Path] | None = None) -> SimResult:
    """Run every sample of ``inputs`` ([B, ...] uint8) on the accelerator of ``plan``.

    ``clock_gating`` (the default) clocks each engine only while it works: the same logic and cycle counts
    as the design a board gets (without it), several times faster in Verilator (``Accelerator``'s
    docstring; ``tests/test_accelerator.py`` checks that both give the same logits and cycles).
    ``progress(k)`` is called after each batch of ``k`` samples; ``build_progress(seconds)`` about once a
    second while the Verilator model is built (not when it is cached: the cache is keyed on the plan,
    :func:`design_key`, so a cached model is found without generating its Verilog). ``waveform``
    (``(format, file)``, format ``"fst"`` or ``"vcd"``; Verilator, one batch): every signal of the run written to
    ``file`` by a tracing build of the same design (:func:`sim.verilator_host.build`)."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    if waveform is not None and (simulator != "verilator" or len(inputs) > batch):
        raise ValueError(f"a waveform is written by Verilator for one batch (at most {batch} samples)")
    def accelerator():
        return Accelerator(plan, trace=trace, ecp5=False, clock_gating=clock_gating)

    build_dir = Path(build_dir)
    if simulator == "verilator":
        binary = verilator_host.build(accelerator(), build_dir, key=design_key(plan, trace, clock_gating),
                                      progress=build_progress, waveform=None if waveform is None else waveform[0])
    env = None if waveform is None else {verilator_host.WAVEFORM_ENV: str(waveform[1])}
    logits, cycles, events, synops, traces = [], [], [], [], []
    total_cycles, seconds, model = 0, 0.0, plan.model_id
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        script, sizes = Script(), []
        for x in chunk:
            one = script_for(plan, x, trace)
            script.words += one.words
            script.reads += one.reads
            sizes.append(one.reads)
        if simulator == "verilator":
            res = verilator_host.run(binary, script, build_dir / "run", env=env)
            reads, cyc, sec = res.reads, res.cycles, res.seconds
        elif simulator == "icarus":
            from .cocotb_script import run_script
            reads, cyc, sec = run_script(accelerator(), script,
                                         build_dir / "icarus", simulator="icarus")
        else:
            reads, cyc, sec = _run_amaranth(accelerator(), script)
        total_cycles += cyc
        seconds += sec
        pos = 0
        for size in sizes:
            tensors, lg, counters = _decode(plan, reads[pos:pos + size], trace)
            pos += size
            logits.append(lg)
            cycles.append(counters["cycles"])
            events.append(counters["events"])
            synops.append(counters["synops"])
            model = counters["model_id"]
            if trace:
                traces.append(tensors)
        if progress:
            progress(len(chunk))
    return SimResult(np.array(logits, dtype=np.int64).reshape(len(inputs), plan.classes),
                     np.array(cycles, dtype=np.int64), np.array(events, dtype=np.int64),
                     np.array(synops, dtype=np.int64), model, total_cycles, seconds, traces)
