"""A host-bus device in the Amaranth simulator, driven from Python one bus operation at a time.

:class:`AmaranthBus` has the two methods a host driver uses of :class:`compiler.host.link.Link`,
``write_words`` and ``read_words``, so a driver written for the board (``compiler.host.npu.NpuDriver``) runs
unchanged on a simulated device. Each call runs the simulator (``Simulator.advance``) until its operations
are done, with the bus timing of the C++ harness (``sim/harness/host_bus.cpp``): a write takes one cycle, a
read :data:`hdl.hostbus.READ_LATENCY` cycles. Time does not pass between calls. Slow (a few thousand
cycles per second for the overlay): for small tests; whole programs belong in Verilator
(``sim.verilator_host.Session``).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from amaranth.sim import Simulator

from hdl.hostbus import READ_LATENCY

__all__ = ["AmaranthBus"]

_WRITE, _READ, _TICK = "write", "read", "tick"


class AmaranthBus:
    """``device`` (a component with ``bus: In(HostBusSignature(...))``) in the Amaranth simulator, with
    ``background`` testbenches beside it (``async def bench(ctx)``: what the device's other ports meet, such
    as ``sim.ext_memory.serve_reads``).

    Attributes
    ----------
    cycles : int
        Clock cycles simulated so far.
    """

    def __init__(self, device, background=()):
        self.device = device
        self.cycles = 0
        self._ops: deque = deque()
        self._reads: list[int] = []
        self._running = False
        self._sim = Simulator(device)
        self._sim.add_clock(1e-8)
        self._sim.add_testbench(self._bench, background=True)
        for bench in background:
            self._sim.add_testbench(bench, background=True)

    async def _bench(self, ctx):
        bus = self.device.bus

        async def tick():
            await ctx.tick()
            self.cycles += 1

        while True:
            if not self._ops:
                self._running = False
                await tick()
                continue
            op, addr, value = self._ops.popleft()
            if op == _WRITE:
                ctx.set(bus.addr, addr)
                ctx.set(bus.wdata, value)
                ctx.set(bus.we, 1)
                await tick()
                ctx.set(bus.we, 0)
            elif op == _READ:
                ctx.set(bus.addr, addr)
                ctx.set(bus.re, 1)
                await tick()
                ctx.set(bus.re, 0)
                for _ in range(READ_LATENCY - 1):
                    await tick()
                self._reads.append(ctx.get(bus.rdata))
            else:
                for _ in range(value):
                    await tick()

    def _run(self) -> None:
        self._running = True
        while self._running:
            self._sim.advance()

    def write_words(self, addr: int, words) -> None:
        """Write ``words`` (32 bits each) to ``addr``, ``addr + 1``, ..., one per cycle."""
        self._ops.extend((_WRITE, int(addr) + k, int(w) & 0xFFFFFFFF) for k, w in enumerate(words))
        self._run()

    def read_words(self, addr: int, count: int) -> np.ndarray:
        """``count`` words (uint32) read from ``addr``, ``addr + 1``, ..."""
        self._reads = []
        self._ops.extend((_READ, int(addr) + k, 0) for k in range(count))
        self._run()
        return np.array(self._reads, dtype=np.uint32)

    def tick(self, cycles: int) -> None:
        """Let ``cycles`` clock cycles pass with the bus idle."""
        self._ops.append((_TICK, 0, int(cycles)))
        self._run()
