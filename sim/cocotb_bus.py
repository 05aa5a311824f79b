"""The host bus (``hdl.hostbus.HostBusSignature``) driven from cocotb coroutines, with the C++ harness's
timing: the bench of the overlay on Icarus Verilog (``compiler.flows.cocotb_npu``) runs the host driver's bus
accesses through it."""

from __future__ import annotations

from hdl.hostbus import READ_LATENCY

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge, Timer
except ImportError:          # imported outside cocotb's simulator context
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
