"""A memory of the gateware as its part states it (depth, width, read ports, how it is built), for the
pre-synthesis estimate: ``compiler.hw.estimate.map_memory`` maps it onto the ECP5's block and distributed
RAM, and ``compiler.hw.overlay_config`` lists the overlay's. Plain data: no Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Memory", "RULES"]

#: How a memory is built: DP16KD tiles that the core instantiates (``hdl.ecp5.block_ram``), distributed RAM
#: that the core asks for (TRELLIS_DPR16X4), or an Amaranth memory that Yosys maps as it finds cheapest.
RULES = ("primitive", "distributed", "yosys")


@dataclass(frozen=True)
class Memory:
    """One memory of a core.

    Attributes
    ----------
    name : str
        ``<core name>.<memory>``.
    width, depth : int
        Bits per word, words.
    rule : str
        One of :data:`RULES`.
    read_ports : int
        Synchronous read ports (Yosys builds one copy of an inferred memory per port).
    rom : bool
        No write port.
    init : bool
        Initial contents.
    used_width : int or None
        Of a primitive memory, the low bits that something reads (Yosys removes the blocks of the others).
    """
    name: str
    width: int
    depth: int
    rule: str = "yosys"
    read_ports: int = 1
    rom: bool = False
    init: bool = False
    used_width: int | None = None

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, not {self.rule!r}")

    @property
    def bits(self) -> int:
        return self.width * self.depth
