"""Run a host-bus script (``sim.verilator_host.Script``) in a cocotb bench: Icarus Verilog, or Verilator.

The same script the C++ harness runs, executed by a cocotb coroutine (one Python step per bus access and per
waited cycle), so an event-driven simulator checks the very same Verilog. :func:`run_script` is the entry
point; the cocotb test below is what the runner executes (``SCRIPT`` and ``READS`` name the files).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hdl.hostbus import READ_LATENCY

from .cocotb_run import run_cocotb
from .verilator_host import OP_READ, OP_TICK, OP_WAIT, OP_WRITE, Script


def run_script(component, script: Script, build_dir: str | Path, *, simulator: str = "icarus"):
    """Run ``script`` on ``component`` (with a ``bus`` port) -> (reads uint32, cycles, seconds)."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=build_dir) as own:     # this run's own files
        script_path, reads_path = Path(own) / "script.bin", Path(own) / "reads.bin"
        script_path.write_bytes(script.to_bytes())
        t0 = time.monotonic()
        run_cocotb(component, toplevel="top", test_module="sim.cocotb_script",
                   test_dir=Path(__file__).parent.parent, build_dir=build_dir, simulator=simulator,
                   extra_env={"SCRIPT": str(script_path), "READS": str(reads_path)})
        seconds = time.monotonic() - t0
        raw = np.fromfile(reads_path, dtype="<u4")
    cycles, reads = int(raw[0]) | int(raw[1]) << 32, raw[2:]
    if len(reads) != script.reads:
        raise RuntimeError(f"simulation returned {len(reads)} reads, the script asked for {script.reads}")
    return reads, cycles, seconds


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge, Timer
except ImportError:          # imported by run_script's caller without cocotb's simulator context
    cocotb = None


class HostBus:
    """The host bus (``hdl.hostbus.HostBusSignature``) of ``dut`` driven from cocotb coroutines, with the
    C++ harness's timing: a write takes one cycle, a read ``READ_LATENCY``; ``cycles`` counts them."""

    def __init__(self, dut):
        self.dut = dut
        self.cycles = 0

    async def reset(self, hold: bool = True) -> None:
        """Start the clock and hold reset (``hold``) for two cycles, the bus idle."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = int(hold)
        dut.bus__we.value = 0
        dut.bus__re.value = 0
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0

    async def write(self, addr: int, data: int) -> None:
        dut = self.dut
        dut.bus__addr.value, dut.bus__wdata.value, dut.bus__we.value = addr, data & 0xFFFFFFFF, 1
        await RisingEdge(dut.clk)
        self.cycles += 1
        dut.bus__we.value = 0

    async def read(self, addr: int) -> int:
        dut = self.dut
        dut.bus__addr.value = addr
        dut.bus__re.value = 1
        await RisingEdge(dut.clk)
        self.cycles += 1
        dut.bus__re.value = 0
        for _ in range(READ_LATENCY - 1):
            await RisingEdge(dut.clk)
            self.cycles += 1
        await ReadOnly()
        value = int(dut.bus__rdata.value)
        await Timer(1, unit="ns")                # out of the read-only phase, before the next edge
        return value

    async def wait(self, addr: int, mask: int, value: int, limit: int) -> None:
        """Read ``addr`` until ``read & mask == value``; AssertionError after ``limit`` cycles."""
        start = self.cycles
        while (await self.read(addr)) & mask != value:
            assert self.cycles - start <= limit, f"register {addr} never matched"

    async def tick(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.clk)
        self.cycles += n


if cocotb is not None:
    @cocotb.test()
    async def run_bus_script(dut):
        words = np.fromfile(os.environ["SCRIPT"], dtype="<u4").tolist()
        bus = HostBus(dut)
        await bus.reset(hold=bool(int(os.environ.get("RESET", "1"))))
        reads = []
        pc = 0
        while pc < len(words):
            op = words[pc]
            if op == OP_WRITE:
                await bus.write(words[pc + 1], words[pc + 2])
                pc += 3
            elif op == OP_READ:
                reads.append(await bus.read(words[pc + 1]))
                pc += 2
            elif op == OP_WAIT:
                await bus.wait(*words[pc + 1:pc + 5])
                pc += 5
            elif op == OP_TICK:
                await bus.tick(words[pc + 1])
                pc += 2
            else:
                raise AssertionError(f"bad script op {op} at {pc}")
        for name in filter(None, os.environ.get("PROBE", "").split(",")):   # debugging: print signals
            dut._log.info("probe %s = %s", name, dut._id(name, extended=False).value)
        cycles = bus.cycles
        out = np.array([cycles & 0xFFFFFFFF, cycles >> 32, *reads], dtype="<u4")
        out.tofile(os.environ["READS"])
