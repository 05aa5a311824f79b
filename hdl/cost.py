"""What a core costs, as the core itself states it: its memories, its multipliers and the size features of
its LUT4/FF model.

Every core of the accelerator has a ``cost(name)`` method that returns a :class:`CoreCost`, computed from the
very attributes its constructor and ``elaborate`` use, as the core is built for an ECP5 (``ecp5`` on). The
pre-synthesis estimator (``compiler.hw.estimate``) only maps the memories onto the device and sums; the
cycle formulas are methods of the cores too. Plain data: no Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Memory", "CoreCost", "RULES"]

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
    write_register : bool
        The write port's address, data and enable go through a register (``hdl.attention.ram.Ram``).
    fifo : bool
        The storage of an output queue (``hdl.lanes.OutputQueue``), written through a register as wide as
        ``width``.
    """
    name: str
    width: int
    depth: int
    rule: str = "yosys"
    read_ports: int = 1
    rom: bool = False
    init: bool = False
    used_width: int | None = None
    write_register: bool = False
    fifo: bool = False

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, not {self.rule!r}")

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class CoreCost:
    """What one core instance costs.

    Attributes
    ----------
    kind : str
        The core's kind: the key of its fitted LUT4/FF model (``compiler.hw.estimate._CORE_MODELS``).
    name : str
        The instance (the accelerator's ``<stage>/<role>``).
    features : dict of str to float
        Size features of the LUT4/FF model: lanes, widths of the datapath (summed over lanes).
    memories : list of Memory
    multipliers : int
        MULT18X18D blocks.
    """
    kind: str
    name: str
    features: dict[str, float]
    memories: list[Memory] = field(default_factory=list)
    multipliers: int = 0
