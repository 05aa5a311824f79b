# amaranth: UnusedElaboratable=no
"""Pre-synthesis estimate of an accelerator: LUT4, FF, DP16KD, MULT18X18D and cycles per inference.

Each core states its own cost (:mod:`hdl.cost`): ``hdl.accelerator.Accelerator(plan).cores()`` builds the
cores of every stage of the hardware plan as the accelerator does, without elaborating them, and each
core's ``cost(name)`` gives its memories, multipliers and the size features of its LUT/FF model; the top
(buffers, controller) states its own (the accelerator is built only for that, never elaborated: hence the
``UnusedElaboratable`` option above). This module holds what is about the toolchain and the fit: how
Yosys and the ECP5 map a memory, the fitted LUT/FF models, the board's part, fitting a board. It answers
in tens of milliseconds, before any synthesis: ``build`` uses it to refuse a model that cannot fit a board
and ``--lanes auto`` to choose the lane count. ``docs/build.md`` gives its measured error against nextpnr.

How each figure is made
-----------------------
MULT18X18D
    Exact: the sum of the cores' (the patch convolution of uint8 pixels, one per lane; the requantizers,
    one per pair of operand limbs in each lane that holds a channel).
DP16KD
    A list of every memory the cores state (its depth, width, read ports and contents), each mapped by
    the rule that builds it (``hdl.cost.RULES``):

    - ``"primitive"``, DP16KD tiles the cores build (``hdl.ecp5.block_ram``: the spike accumulators'
      weights, lane memories of at least 33 words, attention RAMs): the tiling of
      ``hdl.ecp5.bram_tiling``, the configuration (16384x1, 8192x2, 4096x4, 2048x9, 1024x18, 512x36;
      initialised ones 1024x18 or 512x36 only) with the fewest blocks, ``ceil(width / w) * ceil(depth /
      d)``, less the columns that no lane reads (Yosys removes them: the head's padding lanes past its
      classes);
    - ``"distributed"``, distributed RAM the cores ask for (the attention RAMs that ``hdl.attention.ram
      .ram_style`` finds cheaper so): ``ceil(width / 4) * ceil(depth / 16)`` TRELLIS_DPR16X4;
    - ``"yosys"``, every other memory (the buffers between engines, accumulator lanes, FIFOs, parameter ROMs, the UART
      bridge's write buffer) is inferred by Yosys (``memory_libmap``), which takes the cheapest of:
      flip-flops/LUTs (cost 1 per bit, 1/16 per bit for a ROM), distributed RAM (TRELLIS_DPR16X4, 16x4,
      cost 4, not for ROMs) and block RAM (DP16KD / PDPW16KD, cost 128 each; 9-bit bytes, so a word is
      padded to a multiple of 9 bits), one copy per read port, plus 0.5 per bit of read multiplexer and
      per write decoder between address ranges, and twice the emulation score of the synchronous read
      (1 per port for distributed RAM, 3 + 4 per port for block RAM, 1 for a block ROM). So a 32-word
      buffer of 224 bits read by two engines becomes 224 distributed RAMs (cost 1125, not 14 blocks at
      1814), a 128-word buffer of 48 bits 2 blocks (cost 270): small memories become LUT RAM.
LUT4 and FF
    A sum over the cores each stage instantiates (buffer readers, event queues, accumulators, neurons,
    requantizers, residual adds, the first layer, attention units), the buffers and controller of the
    top, and the board's UART bridge, PLL and LEDs (:data:`BOARD`). Each core's count is a linear function of its size
    (lanes times the widths of its datapath, the widths of its distributed RAMs and logic ROMs, see
    ``_CORE_MODELS``) whose coefficients were fitted with non-negative least squares to Yosys's per-module
    counts (``synth_ecp5 -noflatten``) of generated accelerators, plus the LUTs of the distributed RAMs
    above (6 LUT sites per TRELLIS_DPR16X4: 4 RAM, 2 write-port), scaled to nextpnr's counts of the
    flattened design (``_NEXTPNR_FACTOR``). ``LUT4`` is in nextpnr's unit (``TRELLIS_COMB``: logic LUTs,
    two per carry cell, RAM LUTs, feed-throughs).
Distributed RAM (``DPR16X4``)
    The TRELLIS_DPR16X4 cells of the memories above. Only two slices of a PFU can be RAM, so an ECP5 holds
    one per 32 LUT4 (:func:`distributed_ram_capacity`); ``--lanes auto`` keeps within
    :data:`ROUTABLE_DPR_FRACTION` of that.
Cycles per inference
    The sum over stages (and time steps) of each engine's cycles from its cores' own formulas
    (``hdl.accelerator.Accelerator.stage_cycles``: the patch convolution's ``frame_cycles``, ``I + N * G *
    I``; a reader's ``words``, one lane group per cycle through the neuron; the accumulator's
    ``frame_cycles``, ``k * G + G + 6`` per frame of ``k`` events; the attention units' ``step_cycles``) and
    the controller's two cycles per stage, plus fitted constants for the pipeline fills that the formulas
    leave out (:data:`_STAGE_OVERHEAD`). ``k`` (spike events per token) comes from the golden model's trace
    of sample inputs, a masked source's scaled by the fraction of its mask's lanes that are set; without
    samples every input is taken to spike (the worst case; ``activity`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hdl.accelerator import Accelerator
from hdl.cost import CoreCost, Memory
from hdl.ecp5 import BRAM_CONFIGS, bram_tiling

from ..ir import golden
from .plan import refuse_unsupported

__all__ = ["Memory", "Estimate", "estimate", "memories", "map_memory", "multipliers", "cycles", "fit_problems",
           "auto_lanes", "routable_totals", "distributed_ram_capacity", "RESOURCES", "ROUTABLE_DPR_FRACTION"]

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
    """How ``mem`` is built (see the module's documentation for the rules)."""
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


# -- the cores ------------------------------------------------------------------------------------------

#: The board's part beside the accelerator: the UART bridge (its 64-word write buffer), the PLL and the LEDs.
BOARD = CoreCost("board", "UART bridge, PLL, LEDs", {}, [Memory("uart bridge buffer", 32, 64)])


def cores(plan, accelerator: Accelerator | None = None) -> list[CoreCost]:
    """The stated cost of every core the accelerator of ``plan`` instantiates (``hdl.accelerator.Accelerator
    .cores``), then of its top (buffers, controller, host bus) and of the board (:data:`BOARD`).
    ``accelerator``: ``Accelerator(plan)`` if already built."""
    acc = Accelerator(plan) if accelerator is None else accelerator
    return [core.cost(name) for name, core in acc.cores()] + [acc.cost(), BOARD]


# -- LUT4 / FF models -----------------------------------------------------------------------------------

#: Per core kind: ``{"LUT4": (constant, {feature: coefficient}), "FF": (...)}``, fitted to Yosys's per-module
#: counts of generated accelerators (``synth_ecp5 -noflatten``; see docs/build.md). LUT4 is in LUT sites
#: (LUT4 + 2 per CCU2C), without distributed RAMs (added from the memory list).
_CORE_MODELS: dict[str, dict[str, tuple[float, dict[str, float]]]] = {
    "reader": {"LUT4": (38.056, {}),
              "FF": (25.111, {"lutram_out": 0.9918, "queue_in": 1})},
    "events": {"LUT4": (45.371, {"lanes": 8.4963, "level_bits": 0.8236}),
              "FF": (26.881, {"lanes": 8.301, "level_bits": 2.1513})},
    "accumulate": {"LUT4": (0, {"acc_bits": 0.8736, "product_bits": 3.7809, "lutram_mux": 2.757}),
                  "FF": (77.693, {"lanes": 3.038, "acc_bits": 0.7992, "ram_bits": 1.9734, "product_bits": 0.721})},
    "neuron": {"LUT4": (0, {"lanes": 1.4418, "h_bits": 0.5682, "v_bits": 1.6859, "rom_bits": 0.0751}),
              "FF": (146.797, {"in_bits": 3.3495, "v_bits": 5.0963, "lutram_out": 2.1098, "rom_out": 0.4537, "queue_in": 1})},
    "requant": {"LUT4": (15.208, {"lanes": 18.2907, "rom_bits": 0.0812}),
               "FF": (69.298, {"in_bits": 5.1505, "lutram_out": 0.7529, "rom_bits": 0.1495, "queue_in": 1})},
    "add": {"LUT4": (81.127, {"bits": 1.1859}),
           "FF": (10.502, {"lutram_out": 3.1759, "queue_in": 1})},
    "pixel_conv": {"LUT4": (99.547, {"acc_bits": 1.883, "lut_mult_bits": 0.2755, "rom_bits": 0.044}),
                  "FF": (158.603, {"acc_bits": 0.5365, "lutram_out": 1.3675, "queue_in": 1})},
    "linear_attention": {"LUT4": (2385.75, {}),
                        "FF": (341.5, {"data_bits": 6.5937, "write_in": 1})},
    "cospike": {"LUT4": (0, {"count_bits": 8.7232}),
               "FF": (0, {"count_bits": 8.6786, "write_in": 1})},
    "top": {"LUT4": (0, {"stages": 158.285, "lutram_mux": 0.4202}),
           "FF": (0, {"lutram_out": 0.593, "stages": 148.793})},
    "board": {"LUT4": (999, {}),
             "FF": (372, {})},
}

#: From the per-module counts (``-noflatten``) that the core models are fitted to, to nextpnr's counts of the
#: flattened design: flattening saves about 9% of the LUT sites and 5% of the flip-flops, and nextpnr adds
#: feed-through LUTs at packing (TRELLIS_COMB is 10% above Yosys's LUT sites plus 6 per distributed RAM).
_NEXTPNR_FACTOR = {"LUT4": 1.0, "FF": 0.95}


def memory_features(memories: list[Memory]) -> dict[str, float]:
    """What a core's memories add to its LUT/FF model: the read registers of distributed RAMs
    (``lutram_out``: width per read port) and their multiplexers between 16-word ranges (``lutram_mux``),
    ROMs and RAMs that Yosys makes into logic (``rom_bits``, ``rom_out``: their width, ``ram_bits``), and
    the write registers in front of an output queue's FIFO and of the attention RAMs (``queue_in``: its
    width; ``write_in``: address, data and enable; both added after the fit, so their coefficients are 1
    flip-flop per bit, not fitted)."""
    f = {"lutram_out": 0.0, "lutram_mux": 0.0, "rom_bits": 0.0, "rom_out": 0.0, "ram_bits": 0.0, "queue_in": 0.0,
         "write_in": 0.0}
    for m in memories:
        if m.fifo:
            f["queue_in"] += m.width
        if m.write_register:
            f["write_in"] += m.width + max(1, (m.depth - 1).bit_length()) + 1
        mp = map_memory(m)
        if mp.kind == "LUTRAM":
            f["lutram_out"] += m.width * m.read_ports
            f["lutram_mux"] += (-(-m.depth // 16) - 1) * m.width * m.read_ports
        elif mp.kind == "logic" and m.rom:
            f["rom_bits"] += m.bits
            f["rom_out"] += m.width
        elif mp.kind == "logic":
            f["ram_bits"] += m.bits
    return f


def core_features(core: CoreCost) -> dict[str, float]:
    """The features of ``core``'s LUT/FF model: its size features and its memories'."""
    return {"n": 1.0, **core.features, **memory_features(core.memories)}


def _core_resources(core: CoreCost) -> dict[str, float]:
    model = _CORE_MODELS.get(core.kind, {})
    feats = core_features(core)
    out = {}
    for res in ("LUT4", "FF"):
        const, coeffs = model.get(res, (0.0, {}))
        out[res] = const + sum(c * feats.get(k, 0.0) for k, c in coeffs.items())
    return out


# -- cycles ---------------------------------------------------------------------------------------------

#: Fitted cycles per stage and time step beyond the formulas (pipeline fills of the readers, event queues,
#: neurons and requantizers; the controller's handshakes), from the hardware counter in Verilator.
_STAGE_OVERHEAD = {"stem": 17.0, "residual_neuron": 17.0, "dense_neuron": 17.0, "dense_residual": 17.0,
                   "linear_attention": 17.0, "cospike": 17.0, "head": 17.0}
_FRAME_OVERHEAD = {"dense_neuron": 0.0, "dense_residual": 0.0, "head": 0.0}


def _events_per_token(plan, x: np.ndarray | None) -> tuple[dict[str, np.ndarray], str]:
    """Mean non-zero inputs per (time step, token) of every stored spike tensor ``[T, N]``, from the
    golden model's trace of ``x``; without samples, every input (the worst case)."""
    spikes = [b for b in plan.buffers.values() if b.kind == "spikes"]
    if x is None or len(x) == 0:
        return {b.name: np.full((plan.timesteps, b.tokens), float(b.channels)) for b in spikes}, "worst case"
    _, env = golden.run(plan.graph, np.asarray(x), trace=True)
    out = {}
    for b in spikes:
        v = np.asarray(env[b.name]).reshape(len(x), plan.timesteps, b.tokens, b.channels)
        out[b.name] = (v != 0).sum(-1).mean(0).astype(float)
    return out, f"mean of {len(x)} samples"


def cycles(plan, x: np.ndarray | None = None, accelerator: Accelerator | None = None
           ) -> tuple[float, dict[str, float], str]:
    """``(cycles per inference, cycles per stage, activity)``: per stage and time step, the engine's cycles
    from its cores' formulas (``hdl.accelerator.Accelerator.stage_cycles``) and the fitted overheads.
    ``accelerator``: ``Accelerator(plan)`` if already built."""
    k, activity = _events_per_token(plan, x)
    acc = Accelerator(plan) if accelerator is None else accelerator
    T = plan.timesteps
    per_stage: dict[str, float] = {}
    for t in range(T):
        for stage in plan.stages:
            if stage.once and t > 0:
                continue
            events = {name: k[name][t] for name in stage.srcs if name in k}
            if stage.mask:                          # the lanes that the mask lets through, on average
                mask = plan.buffers[stage.mask]
                events[stage.srcs[0]] = events[stage.srcs[0]] * (k[mask.name][t].sum() / max(1, mask.channels))
            c = acc.stage_cycles(stage, events, last_step=t == T - 1)
            c += _STAGE_OVERHEAD[stage.kind] + plan.tokens * _FRAME_OVERHEAD.get(stage.kind, 0.0)
            per_stage[stage.name] = per_stage.get(stage.name, 0.0) + c
    return float(sum(per_stage.values())), per_stage, activity


# -- the estimate ---------------------------------------------------------------------------------------

@dataclass
class Estimate:
    lanes: int
    resources: dict[str, int]                      # LUT4, FF, DP16KD, MULT18X18D; DPR16X4 (distributed RAM)
    cycles_per_inference: float
    cycles_per_stage: dict[str, float]
    activity: str                                  # "mean of N samples" or "worst case"
    memories: list[tuple[Memory, Mapping]]
    cores: list[CoreCost]
    dpr16x4: int                                   # distributed RAM cells (each needs a RAMW slice)

    def to_dict(self) -> dict:
        by_kind: dict[str, dict[str, float]] = {}
        for core in self.cores:
            r = _core_resources(core)
            entry = by_kind.setdefault(core.kind, {"count": 0, "LUT4": 0.0, "FF": 0.0})
            entry["count"] += 1
            entry["LUT4"] += r["LUT4"]
            entry["FF"] += r["FF"]
        return {
            "lanes": self.lanes,
            "resources": dict(self.resources),
            "cycles_per_inference": self.cycles_per_inference,
            "cycles_activity": self.activity,
            "cycles_per_stage": dict(self.cycles_per_stage),
            "distributed_ram_cells": self.dpr16x4,
            "block_rams": [{"memory": m.name, "width": m.width, "depth": m.depth, "blocks": mp.count}
                           for m, mp in self.memories if mp.kind == "DP16KD"],
            "cores": {k: {"count": v["count"], "LUT4": round(v["LUT4"]), "FF": round(v["FF"])}
                      for k, v in by_kind.items()},
            "cores_note": "per core kind, in Yosys's per-module units: LUT4 without the distributed RAMs' LUTs, "
                          "before the flattening and packing factors",
        }


def estimate(plan, x: np.ndarray | None = None) -> Estimate:
    """Estimate the resources and cycles per inference of the board build of ``plan``.

    ``x``: sample inputs ``[B, ...]`` whose golden-model spike counts drive the cycle estimate (None:
    the worst case, every input spiking)."""
    acc = Accelerator(plan)
    core_list = cores(plan, acc)
    lut = ff = 0.0
    dsp = 0
    mapped = []
    dprs = blocks = 0
    for core in core_list:
        r = _core_resources(core)
        lut += r["LUT4"]
        ff += r["FF"]
        dsp += core.multipliers
        for mem in core.memories:
            mp = map_memory(mem)
            mapped.append((mem, mp))
            if mp.kind == "DP16KD":
                blocks += mp.count
            elif mp.kind == "LUTRAM":
                dprs += mp.count
    lut = (lut + LUT_SITES_PER_DPR16X4 * dprs) * _NEXTPNR_FACTOR["LUT4"]
    ff *= _NEXTPNR_FACTOR["FF"]
    total, per_stage, activity = cycles(plan, x, acc)
    return Estimate(plan.lanes, {"LUT4": int(round(lut)), "FF": int(round(ff)), "DP16KD": blocks,
                                 "MULT18X18D": dsp, "DPR16X4": dprs},
                    total, per_stage, activity, mapped, core_list, dprs)


def multipliers(plan) -> int:
    return sum(c.multipliers for c in cores(plan))


def memories(plan) -> list[tuple[Memory, Mapping]]:
    return [(m, map_memory(m)) for c in cores(plan) for m in c.memories]


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


#: ``--lanes auto`` keeps the distributed RAM within this fraction of what the device holds: with 89% of its
#: RAM slices used (the bundled model at 16 lanes on the LFE5U-85F) nextpnr's router did not converge in over
#: an hour, twice (docs/build.md).
ROUTABLE_DPR_FRACTION = 0.6


def routable_totals(totals: dict[str, int]) -> dict[str, int]:
    """``totals`` with the distributed RAM limited to :data:`ROUTABLE_DPR_FRACTION` of the device's."""
    cap = totals.get("DPR16X4", distributed_ram_capacity(totals["LUT4"]))
    return {**totals, "DPR16X4": int(cap * ROUTABLE_DPR_FRACTION)}


def auto_lanes(graph, totals: dict[str, int], plan_for) -> tuple[int, list[tuple[int, Estimate]]]:
    """The largest lane count dividing the model width whose estimate fits ``totals`` (with the distributed
    RAM within :data:`ROUTABLE_DPR_FRACTION` of the device's).

    ``plan_for(P)`` makes the plan of ``P`` lanes. Returns ``(P, [(P, estimate), ...])`` for every
    divisor tried, or ``(0, ...)`` if none fits. UserError first for a graph no hardware executes yet
    (:func:`compiler.hw.plan.refuse_unsupported`): its first op has no stem weight to read the width from."""
    refuse_unsupported(graph)
    dim = graph.ops[0].weight.shape[0]
    limits = routable_totals(totals)
    tried = []
    for p in sorted((p for p in range(1, dim + 1) if dim % p == 0), reverse=True):
        est = estimate(plan_for(p))
        tried.append((p, est))
        if not fit_problems(est.resources, limits):
            return p, tried
    return 0, tried
