"""How the ECP5 and Yosys build a memory, and whether a design's resources fit a device: the rules that the
overlay's pre-synthesis estimate (``compiler.hw.overlay_config``) applies to the memories its parts state.

A memory (``hdl.cost.Memory``) is built by the rule its part asks for:

- ``"primitive"``: DP16KD tiles the part instantiates (``hdl.ecp5.block_ram``), tiled as
  ``hdl.ecp5.bram_tiling`` tiles them (16384x1, 8192x2, 4096x4, 2048x9, 1024x18, 512x36; initialised ones
  1024x18 or 512x36 only), the fewest blocks, less the columns that nothing reads (Yosys removes them);
- ``"distributed"``: distributed RAM, ``ceil(width / 4) * ceil(depth / 16)`` TRELLIS_DPR16X4 per read port;
- ``"yosys"``: an Amaranth memory that Yosys maps (``memory_libmap``) as it finds cheapest: flip-flops/LUTs
  (cost 1 per bit, 1/16 per bit for a ROM), distributed RAM (TRELLIS_DPR16X4, cost 4, not for ROMs) or block
  RAM (DP16KD / PDPW16KD, cost 128 each; 9-bit bytes, so a word is padded to a multiple of 9 bits), one copy
  per read port, plus 0.5 per bit of read multiplexer and per write decoder between address ranges, and twice
  the emulation score of the synchronous read (1 per port for distributed RAM, 3 + 4 per port for block RAM,
  1 for a block ROM).

The rules are exact for DP16KD against nextpnr (``docs/build.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hdl.cost import Memory
from hdl.ecp5 import BRAM_CONFIGS, bram_tiling

__all__ = ["Memory", "Mapping", "map_memory", "fit_problems", "distributed_ram_capacity", "RESOURCES"]

RESOURCES = ("LUT4", "FF", "DP16KD", "MULT18X18D")

#: Yosys's memory_libmap costs: a DP16KD / PDPW16KD, a TRELLIS_DPR16X4
_YOSYS_BRAM_COST, _YOSYS_LUTRAM_COST = 128, 4
LUT_SITES_PER_DPR16X4 = 6           # 4 RAM LUTs and 2 write-port LUTs (nextpnr's "RAM LUTs", "RAMW LUTs")


# -- memories ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    """What a memory becomes: ``kind`` ``"DP16KD"``, ``"LUTRAM"`` or ``"logic"`` and how many of it
    (blocks, TRELLIS_DPR16X4 cells, or bits held in flip-flops / LUT logic)."""
    kind: str
    count: int


def _split_cost(width: int, ranges: int, reads: int, rom: bool) -> float:
    """Yosys's cost of the read multiplexers and write decoders between ``ranges`` address ranges."""
    mux = 0.5 * (ranges - 1) * width * reads
    demux = 0.5 * ranges if ranges > 1 and not rom else 0.0
    return mux + demux


def _yosys_block_cost(width: int, depth: int, reads: int, rom: bool) -> tuple[float, int]:
    """``(cost, blocks)`` of Yosys's cheapest DP16KD / PDPW16KD geometry for one memory (one copy per
    read port; 9-bit bytes; emulation of the synchronous read's enable and reset: 3 + 4 per port)."""
    best = None
    for unit, rows in BRAM_CONFIGS:
        byte = min(9, unit)
        padded = -(-width // byte) * byte
        ranges = -(-depth // rows)
        blocks = -(-(ranges * padded) // unit)
        cost = (_YOSYS_BRAM_COST * blocks * reads + _split_cost(width, ranges, reads, rom)
                + 2 * (1 if rom else 3 + 4 * reads))
        if best is None or cost < best[0]:
            best = (cost, blocks * reads)
    return best


def _lutram_cells(width: int, depth: int) -> int:
    """TRELLIS_DPR16X4 (16 words x 4 bits) cells of one copy of a memory."""
    return -(-depth // 16) * -(-width // 4)


def _yosys_lutram_cost(width: int, depth: int, reads: int) -> tuple[float, int]:
    """``(cost, cells)`` of TRELLIS_DPR16X4 distributed RAM (16 x 4, one copy per read port; the
    synchronous read is a register after the asynchronous one: emulation score 1 per port)."""
    ranges = -(-depth // 16)
    cells = _lutram_cells(width, depth)
    cost = _YOSYS_LUTRAM_COST * cells * reads + _split_cost(width, ranges, reads, False) + 2 * reads
    return cost, cells * reads


def map_memory(mem: Memory) -> Mapping:
    """How ``mem`` is built (the module's rules)."""
    if mem.rule == "primitive":
        width, cols, rows = bram_tiling(mem.width, mem.depth, init=mem.init)
        if mem.used_width is not None:          # Yosys removes the blocks whose outputs nothing reads
            cols = -(-mem.used_width // width)
        return Mapping("DP16KD", cols * rows * mem.read_ports)
    if mem.rule == "distributed":
        return Mapping("LUTRAM", _lutram_cells(mem.width, mem.depth) * mem.read_ports)
    logic = mem.bits * (1 / 16 if mem.rom else 1.0)
    options = [(logic, Mapping("logic", mem.bits))]
    cost, blocks = _yosys_block_cost(mem.width, mem.depth, mem.read_ports, mem.rom)
    options.append((cost, Mapping("DP16KD", blocks)))
    if not mem.rom:
        cost, cells = _yosys_lutram_cost(mem.width, mem.depth, mem.read_ports)
        options.append((cost, Mapping("LUTRAM", cells)))
    best = options[0]
    for option in options[1:]:
        if option[0] < best[0]:                 # Yosys keeps the logic mapping on a tie
            best = option
    return best[1]


# -- fitting a board --------------------------------------------------------------------------------------

def distributed_ram_capacity(lut4: int) -> int:
    """TRELLIS_DPR16X4 cells an ECP5 holds: only slices A and B of a PFU (eight LUTs) can be RAM, four LUTs
    per 16x4 RAM, so one per 32 LUT4 (nextpnr's "RAM LUTs" total is LUT4 / 8)."""
    return int(lut4) // 32


def fit_problems(resources: dict[str, int], totals: dict[str, int]) -> list[tuple[str, int, int]]:
    """``(resource, needed, available)`` for every resource the design needs more of than the device has:
    the four of :data:`RESOURCES`, and distributed RAM (``DPR16X4``) when ``resources`` counts it."""
    out = [(name, int(resources[name]), int(totals[name])) for name in RESOURCES if resources[name] > totals[name]]
    if "DPR16X4" in resources:
        cap = totals.get("DPR16X4", distributed_ram_capacity(totals["LUT4"]))
        if resources["DPR16X4"] > cap:
            out.append(("DPR16X4", int(resources["DPR16X4"]), int(cap)))
    return out
