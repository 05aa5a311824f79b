"""The host bus: how the host (UART bridge on a board, C++ harness in simulation) talks to an accelerator.

A plain synchronous memory-mapped bus of 32-bit words. The host drives ``addr``, ``wdata``, ``we`` and ``re``
for one cycle per access; a read's ``rdata`` is valid :data:`READ_LATENCY` cycles after ``re`` (fixed, so
that registers and block-RAM read ports answer alike, and the read multiplexer of a large accelerator can
be pipelined) and holds until the next read. A device that answers one cycle after ``re`` and holds its
answer meets the contract too. Writes and reads never stall.
"""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

DATA_WIDTH = 32
#: Cycles from a read's ``re`` to its ``rdata``: the device registers the address beside its read
#: multiplexer (the bridge's address register is across the die), reads, and registers what it read before
#: it selects: the overlay's scratchpad words leave their block RAMs into a register
#: (``hdl.npu.overlay.PEEK_LATENCY``), then a 32-bit chunk is chosen into ``rdata``.
READ_LATENCY = 4


class HostBusSignature(wiring.Signature):
    """The bus as the host sees it (an accelerator takes ``In(HostBusSignature(...))``)."""

    def __init__(self, addr_width: int = 16):
        if not isinstance(addr_width, int) or not 1 <= addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in 1..32, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "addr": Out(unsigned(addr_width)),
            "wdata": Out(unsigned(DATA_WIDTH)),
            "we": Out(1),
            "re": Out(1),
            "rdata": In(unsigned(DATA_WIDTH)),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, HostBusSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"HostBusSignature({self.addr_width})"
