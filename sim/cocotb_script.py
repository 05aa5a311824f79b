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

if cocotb is not None:
    @cocotb.test()
    async def run_bus_script(dut):
        words = np.fromfile(os.environ["SCRIPT"], dtype="<u4").tolist()
        bus_addr, bus_wdata, bus_we, bus_re, bus_rdata = (dut.bus__addr, dut.bus__wdata, dut.bus__we, dut.bus__re,
                                                          dut.bus__rdata)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = int(os.environ.get("RESET", "1"))
        bus_we.value = 0
        bus_re.value = 0
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cycles = 0
        reads = []

        async def read(addr):
            nonlocal cycles
            bus_addr.value = addr
            bus_re.value = 1
            await RisingEdge(dut.clk)
            cycles += 1
            bus_re.value = 0
            for _ in range(READ_LATENCY - 1):
                await RisingEdge(dut.clk)
                cycles += 1
            await ReadOnly()
            value = int(bus_rdata.value)
            await Timer(1, unit="ns")            # out of the read-only phase, before the next edge
            return value

        pc = 0
        while pc < len(words):
            op = words[pc]
            if op == OP_WRITE:
                bus_addr.value, bus_wdata.value, bus_we.value = words[pc + 1], words[pc + 2], 1
                await RisingEdge(dut.clk)
                cycles += 1
                bus_we.value = 0
                pc += 3
            elif op == OP_READ:
                reads.append(await read(words[pc + 1]))
                pc += 2
            elif op == OP_WAIT:
                addr, mask, value, limit = words[pc + 1:pc + 5]
                start = cycles
                while (await read(addr)) & mask != value:
                    assert cycles - start <= limit, f"register {addr} never matched"
                pc += 5
            elif op == OP_TICK:
                for _ in range(words[pc + 1]):
                    await RisingEdge(dut.clk)
                cycles += words[pc + 1]
                pc += 2
            else:
                raise AssertionError(f"bad script op {op} at {pc}")
        for name in filter(None, os.environ.get("PROBE", "").split(",")):   # debugging: print signals
            dut._log.info("probe %s = %s", name, dut._id(name, extended=False).value)
        out = np.array([cycles & 0xFFFFFFFF, cycles >> 32, *reads], dtype="<u4")
        out.tofile(os.environ["READS"])
