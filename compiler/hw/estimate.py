"""Pre-synthesis estimate of an accelerator: LUT4, FF, DP16KD, MULT18X18D and cycles per inference.

Reads only the hardware plan (:class:`compiler.plan.Plan`: lanes, buffers, stages and the IR ops with their
shapes, bit widths and value ranges), never the generated HDL, so it answers in milliseconds, before any
synthesis: ``build`` uses it to refuse a model that cannot fit a board and ``--lanes auto`` to choose the
lane count. ``docs/build.md`` gives its measured error against nextpnr.

How each figure is made
-----------------------
MULT18X18D
    Exact. The first layer's patch convolution of uint8 pixels takes one multiplier per lane (binary event
    frames none); each requantizer lane takes one per pair of operand limbs (a signed operand of more
    than 18 bits is split into 17-bit unsigned limbs and a signed top limb), counting only the lanes whose
    channels exist.
DP16KD
    A list of every memory the cores build (its depth, width, read ports and contents), each mapped by
    the rule that builds it:

    - memories the cores build from DP16KD primitives (``hdl.ecp5.block_ram``: the spike accumulators'
      weights, lane memories of at least 33 words): the tiling of ``hdl.ecp5.bram_tiling``, the
      configuration (16384x1, 8192x2, 4096x4, 2048x9, 1024x18, 512x36; initialised ones 1024x18 or
      512x36 only) with the fewest blocks, ``ceil(width / w) * ceil(depth / d)``, less the columns that no
      lane reads (Yosys removes them: the head's padding lanes past its classes);
    - attention RAMs (``hdl.attention._Ram``): block RAM when its blocks, counted at 400 LUT4 each, cost
      less than distributed RAM at 10 LUT4 per 16x4, else distributed;
    - every other memory (the buffers between engines, accumulator lanes, FIFOs, parameter ROMs, the UART
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
    top, and the board's UART bridge, PLL and LEDs. Each core's count is a linear function of its size
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
    The sum over stages (and time steps) of each engine's documented cycle count, the controller's two
    cycles per stage, plus fitted constants for the pipeline fills that the formulas leave out:
    ``hdl/pixel_conv.py`` (``G * I`` cycles per token), the neuron and requantizer (one lane group per
    cycle), ``hdl/accumulate.py`` (``k * G + G + 6`` per frame of ``k`` events), ``step_cycles`` of the
    attention units. ``k`` (spike events per token) comes from the golden model's trace of sample inputs;
    without samples every input is taken to spike (the worst case; ``activity`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir

__all__ = ["Memory", "Estimate", "estimate", "memories", "map_memory", "multipliers", "cycles", "fit_problems",
           "auto_lanes", "routable_totals", "distributed_ram_capacity", "RESOURCES", "ROUTABLE_DPR_FRACTION"]

RESOURCES = ("LUT4", "FF", "DP16KD", "MULT18X18D")

# -- widths, as the cores compute them -----------------------------------------------------------------


def _signed_width(lo: int, hi: int) -> int:
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def _bits(n: int) -> int:
    """Bits of an unsigned value up to ``n``."""
    return max(1, int(n).bit_length())


def _index_bits(count: int) -> int:
    return max(0, (count - 1).bit_length())


def _groups(out: int, lanes: int) -> int:
    return -(-out // lanes)


def _limbs(width: int) -> int:
    """Multiplier limbs of a signed operand (``hdl.requant._limbs``): 18 bits, else 17-bit pieces."""
    return 1 if width <= 18 else 1 + -(-(width - 18) // 17)


def _acc_width(fan_in: int, bits: int, max_level: int) -> int:
    return _signed_width(fan_in * max_level * -(1 << (bits - 1)), fan_in * max_level * ((1 << (bits - 1)) - 1))


# -- memories ------------------------------------------------------------------------------------------

#: DP16KD configurations (width, depth).
BRAM_CONFIGS = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
BRAM_MIN_DEPTH = 33                 # hdl.lanes: shallower lane memories stay Amaranth memories
_YOSYS_BRAM_COST, _YOSYS_LUTRAM_COST = 128, 4
_ATTN_LUT4_PER_BRAM, _ATTN_LUT4_PER_DPR = 400, 10
LUT_SITES_PER_DPR16X4 = 6           # 4 RAM LUTs and 2 write-port LUTs (nextpnr's "RAM LUTs", "RAMW LUTs")


@dataclass(frozen=True)
class Memory:
    """One memory of the design and how it is built.

    ``rule``: ``"primitive"`` (DP16KD tiles built by the cores), ``"attention"`` (``hdl.attention._Ram``'s
    own choice) or ``"yosys"`` (inferred); ``rom``: no write port (initialised contents)."""
    name: str
    width: int
    depth: int
    rule: str = "yosys"
    read_ports: int = 1
    rom: bool = False
    init: bool = False
    used_width: int | None = None        # primitive memories: the low bits that are read (unread columns go)
    write_register: bool = False         # the write port goes through a register (``hdl.attention._Ram``)

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass(frozen=True)
class Mapping:
    """What a memory becomes: ``kind`` ``"DP16KD"``, ``"LUTRAM"`` or ``"logic"`` and how many of it
    (blocks, TRELLIS_DPR16X4 cells, or bits held in flip-flops / LUT logic)."""
    kind: str
    count: int


def _tiling(width: int, depth: int, init: bool = False) -> tuple[int, int, int]:
    """``hdl.ecp5.bram_tiling``: ``(port width, columns, rows)`` with the fewest blocks, then the fewest rows."""
    best = None
    for w, d in BRAM_CONFIGS:
        if init and w not in (36, 18):
            continue
        cols, rows = -(-width // w), -(-depth // d)
        if best is None or (cols * rows, rows) < (best[1] * best[2], best[2]):
            best = (w, cols, rows)
    return best


def bram_tiling(width: int, depth: int, init: bool = False) -> int:
    """DP16KD blocks of ``hdl.ecp5.bram_tiling``: the configuration with the fewest blocks."""
    _, cols, rows = _tiling(width, depth, init)
    return cols * rows


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


def _yosys_lutram_cost(width: int, depth: int, reads: int) -> tuple[float, int]:
    """``(cost, cells)`` of TRELLIS_DPR16X4 distributed RAM (16 x 4, one copy per read port; the
    synchronous read is a register after the asynchronous one: emulation score 1 per port)."""
    ranges = -(-depth // 16)
    cells = ranges * -(-width // 4)
    cost = _YOSYS_LUTRAM_COST * cells * reads + _split_cost(width, ranges, reads, False) + 2 * reads
    return cost, cells * reads


def map_memory(mem: Memory) -> Mapping:
    """How ``mem`` is built (see the module's documentation for the rules)."""
    if mem.rule == "primitive":
        width, cols, rows = _tiling(mem.width, mem.depth, mem.init)
        if mem.used_width is not None:          # Yosys removes the blocks whose outputs nothing reads
            cols = -(-mem.used_width // width)
        return Mapping("DP16KD", cols * rows * mem.read_ports)
    if mem.rule == "attention":
        blocks = bram_tiling(mem.width, mem.depth)
        dprs = -(-mem.width // 4) * -(-mem.depth // 16)
        if blocks * _ATTN_LUT4_PER_BRAM < dprs * _ATTN_LUT4_PER_DPR:
            return Mapping("DP16KD", blocks)
        return Mapping("LUTRAM", dprs)
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


# -- the cores of each stage ----------------------------------------------------------------------------

@dataclass
class Core:
    """One instance of an ``hdl`` core: its kind, the size features of its LUT/FF model, its memories."""
    kind: str
    name: str
    features: dict[str, float]
    memories: list[Memory] = field(default_factory=list)
    multipliers: int = 0


def _range(plan, tensor: str) -> tuple[int, int]:
    t = plan.types[tensor]
    return int(t.lo), int(t.hi)


def _width(plan, tensor: str) -> int:
    return _signed_width(*_range(plan, tensor))


def _reader(plan, stage_name: str, buf, mask=None) -> Core:
    """``hdl.buffers.BufferReader`` and its 4-entry output queue (3 words of storage)."""
    groups = buf.groups
    tokens = plan.tokens if buf.kind == "pixels" else buf.tokens
    entry = buf.word_width + _index_bits(max(tokens, 2)) + _index_bits(max(groups, 2)) + 3
    return Core("reader", f"{stage_name}/read {buf.name}", {"word": buf.word_width},
                [Memory(f"{stage_name}.read_{buf.name}.fifo", entry, 3)])


def _event_queue(plan, stage_name: str, buf, addr_width: int) -> Core:
    K = buf.lanes
    return Core("events", f"{stage_name}/events {buf.name}",
                {"lanes": K, "level_bits": K * buf.width, "addr": max(addr_width, _index_bits(K), 1)})


def _accumulator(plan, name: str, op: ir.Dense, src) -> Core:
    P = plan.lanes
    O, I = op.weight.shape
    G = _groups(O, P)
    A = _width(plan, op.dst)
    used = min(P, O)
    mems = [Memory(f"{name}.weights", P * op.bits, G * I, "primitive", rom=True, init=True,
                   used_width=used * op.bits)]
    mems += [Memory(f"{name}.acc{lane}", A, G) for lane in range(used)]
    return Core("accumulate", f"{name}/accumulate",
                {"lanes": used, "acc_bits": used * A, "product_bits": used * op.bits * src.width,
                 "addr": _bits(G * I)}, mems)


def _rom(name: str, values: np.ndarray, width: int, lanes: int, rows: int = 1) -> list[Memory]:
    """``hdl.lanes.lane_rom``: nothing if every value is equal, else rows x 2**bits(G) words."""
    if np.all(values == values.flat[0]):
        return []
    groups = _groups(values.shape[-1], lanes)
    depth = rows << _index_bits(groups)
    rule = "primitive" if depth >= BRAM_MIN_DEPTH else "yosys"
    return [Memory(name, lanes * width, depth, rule, rom=True, init=True)]


def _neuron(plan, name: str, op: ir.Neuron, lanes: int, in_range: tuple[int, int], tokens: int) -> Core:
    """``hdl.neuron.NeuronUnit``: parameter ROMs, a membrane memory when stateful, P lanes of datapath."""
    P = lanes
    O = len(op.sign)
    G = _groups(O, P)
    ilo, ihi = in_range
    stateful = plan.timesteps > 1 and op.leak_shift > 0
    bias = op.bias + np.where(op.sign == -1, 1 << op.frac, 0)
    ends = [int(s) * (v << op.frac) + int(b) for s, b in zip(op.sign, bias) for v in (ilo, ihi)]
    xlo, xhi = min(ends), max(ends)
    if stateful:
        L = op.leak_shift
        vlo = min(0, xlo << L)
        vhi = max(0, min(max(int(t) - 1 for t in op.theta[:, 0]), xhi << L))
        hlo, hhi = vlo - (vlo >> L) + xlo, vhi - (vhi >> L) + xhi
        vw = _signed_width(vlo, vhi)
    else:
        hlo, hhi, vw = xlo, xhi, 0
    hw = _signed_width(hlo, hhi + 1)
    xw = _signed_width(xlo, xhi)
    bw = _signed_width(int(bias.min()), int(bias.max()))
    theta = np.clip(op.theta, hlo, hhi + 1)
    mems = _rom(f"{name}.sign", op.sign, 2, P) + _rom(f"{name}.bias", bias, bw, P)
    for k in range(op.levels):
        mems += _rom(f"{name}.theta{k}", theta[:, k], hw, P)
    if stateful:
        depth = tokens << _index_bits(G)
        mems.append(Memory(f"{name}.membrane", P * vw, depth, "primitive" if depth >= BRAM_MIN_DEPTH else "yosys"))
    level_bits = _bits(op.levels)
    entry = P * level_bits + _index_bits(max(G, 2)) + _index_bits(max(tokens, 2)) + 3
    mems.append(Memory(f"{name}.queue", entry, 10))
    in_width = _signed_width(ilo, ihi)
    return Core("neuron", f"{name}/neuron",
                {"lanes": P, "in_bits": P * in_width, "x_bits": P * xw, "h_bits": P * hw * (1 + op.levels),
                 "v_bits": P * vw, "level_bits": P * level_bits}, mems)


def _requant(plan, name: str, op: ir.Requant, lanes: int, in_width: int, tokens: int,
             out_width: int | None = None) -> Core:
    """``hdl.requant.RequantUnit``: per lane one multiplier per pair of limbs, ROMs, an adder tree."""
    P = lanes
    O = len(op.mult)
    G = _groups(O, P)
    mw_lane = []
    for lane in range(P):
        chans = op.mult[lane::P]
        mw_lane.append(_signed_width(int(chans.min()), int(chans.max())) if len(chans) else 0)
    mults = sum(_limbs(in_width) * _limbs(w) for w in mw_lane if w)
    mw = _signed_width(int(op.mult.min()), int(op.mult.max()))
    half = (1 << op.shift) >> 1
    bias = op.bias.reshape(-1, O) + half
    bw = _signed_width(int(bias.min()), int(bias.max()))
    rows = bias.shape[0]
    mems = _rom(f"{name}.mult", op.mult, mw, P) + _rom(f"{name}.bias", bias, bw, P, rows)
    ow = out_width or (op.saturate or _width(plan, op.dst))
    sum_w = in_width + mw + 1
    entry = P * ow + _index_bits(max(G, 2)) + _index_bits(max(tokens, 2)) + 3
    mems.append(Memory(f"{name}.queue", entry, 10))
    return Core("requant", f"{name}/requant",
                {"lanes": P, "sum_bits": P * sum_w * (_limbs(in_width) * _limbs(mw) + 1), "out_bits": P * ow,
                 "in_bits": P * in_width}, mems, mults)


def _residual_add(plan, name: str, lanes: int, width: int, tokens: int, groups: int) -> Core:
    entry = lanes * width + _index_bits(max(groups, 2)) + _index_bits(max(tokens, 2)) + 3
    return Core("add", f"{name}/add", {"lanes": lanes, "bits": lanes * width},
                [Memory(f"{name}.add.queue", entry, 5)])


def _pixel_conv(plan, name: str, op: ir.PatchConv, pixel_bits: int) -> Core:
    P = plan.lanes
    O = op.weight.shape[0]
    I = int(np.prod(op.weight.shape[1:]))
    G = _groups(O, P)
    depth = G * I
    top = (1 << pixel_bits) - 1
    w = op.weight.reshape(O, -1)
    acc = _signed_width(min(0, int(np.clip(w, None, 0).sum(1).min()) * top),
                        max(0, int(np.clip(w, 0, None).sum(1).max()) * top))
    mems = [Memory(f"{name}.weights", P * op.bits, depth, "primitive" if depth >= BRAM_MIN_DEPTH else "yosys",
                   rom=True, init=True)]
    pix_depth = 2 << _index_bits(I)
    mems.append(Memory(f"{name}.pixels", pixel_bits, pix_depth,
                       "primitive" if pix_depth >= BRAM_MIN_DEPTH else "yosys"))
    entry = P * acc + _index_bits(max(G, 2)) + _index_bits(max(plan.tokens, 2)) + 3
    mems.append(Memory(f"{name}.queue", entry, 8))
    dsp = pixel_bits > 1
    return Core("pixel_conv", f"{name}/patch conv",
                {"lanes": P, "acc_bits": P * acc, "lut_mult_bits": 0 if dsp else P * op.bits * pixel_bits},
                mems, P if dsp else 0), acc


def _linear_attention(plan, name: str, op: ir.LinearAttention, level_max: int) -> Core:
    N = plan.tokens
    C = plan.types[op.q].shape[-1]
    H = op.heads
    d = C // H
    D = level_max
    kv = _bits(N * D * D)
    acc = _bits(d * D * N * D * D)
    words = N << _index_bits(H)
    vbits = _bits(D)
    mems = [Memory(f"{name}.v_ram", d * vbits, words, "attention", write_register=True),
            Memory(f"{name}.kv_ram", d * kv, C, "attention", write_register=True),
            Memory(f"{name}.a_ram", d * acc, words, "attention", write_register=True)]
    return Core("linear_attention", f"{name}/linear attention",
                {"d": d, "data_bits": d * (vbits + kv + acc), "addr": _bits(N * C)}, mems), acc


def _cospike(plan, name: str, op: ir.CoSpike, level_max: int) -> Core:
    N = plan.tokens
    C = plan.types[op.k].shape[-1]
    P = plan.lanes
    G = _groups(C, P)
    D = level_max
    count = _bits(N * D * D)
    tag = _bits(-(-N * C // G))
    mems = [Memory(f"{name}.v_ram", _bits(D) + tag, N * C, "attention"),
            Memory(f"{name}.c_ram", P * count, G, "attention", write_register=True)]
    return Core("cospike", f"{name}/co-spike", {"lanes": P, "count_bits": P * count, "addr": _bits(N * C)},
                mems), count


def cores(plan) -> list[Core]:
    """Every core the accelerator of ``plan`` instantiates, stage by stage, then the top (buffers,
    controller, host bus) and the board (UART bridge, PLL, LEDs)."""
    out: list[Core] = []
    P = plan.lanes
    readers: dict[str, int] = {}

    def read(stage, buf, mask=None):
        readers[buf.name] = readers.get(buf.name, 0) + 1
        if mask is not None:
            readers[mask.name] = readers.get(mask.name, 0) + 1
        out.append(_reader(plan, stage.name, buf, mask))

    for stage in plan.stages:
        ops = [plan.op(n) for n in stage.ops]
        if stage.kind == "stem":
            conv, rq = ops
            pix = plan.buffers[stage.srcs[0]]
            read(stage, pix)
            core, acc = _pixel_conv(plan, stage.name, conv, pix.width)
            out.append(core)
            out.append(_requant(plan, f"{stage.name}_rq", rq, P, acc, plan.tokens))
        elif stage.kind == "residual_neuron":
            src = plan.buffers[stage.srcs[0]]
            read(stage, src)
            out.append(_neuron(plan, stage.name, ops[0], P, _range(plan, src.name), plan.tokens))
        elif stage.kind in ("dense_neuron", "dense_residual", "head"):
            dense = ops[1] if stage.kind == "head" else ops[0]
            src = plan.buffers[stage.srcs[0]]
            mask = None
            if stage.kind != "head" and len(stage.srcs) > 1:
                cand = plan.buffers[stage.srcs[1]]
                if cand.kind == "spikes" and cand.tokens == 1:
                    mask = cand
            read(stage, src, mask)
            aw = max(1, (dense.weight.shape[1] - 1).bit_length())
            out.append(_event_queue(plan, stage.name, src, aw))
            out.append(_accumulator(plan, stage.name, dense, src))
            acc_w = _width(plan, dense.dst)
            if stage.kind == "dense_neuron":
                out.append(_neuron(plan, stage.name, ops[1], P, _range(plan, dense.dst), plan.tokens))
            elif stage.kind == "dense_residual":
                rq = ops[1]
                out.append(_requant(plan, stage.name, rq, P, acc_w, plan.tokens))
                res = plan.buffers[stage.srcs[-1]]
                read(stage, res)
                width = max(res.width, _width(plan, rq.dst))
                out.append(_residual_add(plan, stage.name, P, width, plan.tokens, res.groups))
            else:
                out.append(_requant(plan, stage.name, ops[2], P, acc_w, 1, out_width=plan.logit_width))
        elif stage.kind == "linear_attention":
            op, sn = ops
            for name in stage.srcs:
                buf = plan.buffers[name]
                read(stage, buf)
                out.append(_event_queue(plan, stage.name, buf, (buf.tokens * buf.channels - 1).bit_length()))
            core, acc = _linear_attention(plan, stage.name, op, int(plan.types[op.q].hi))
            out.append(core)
            d = plan.types[op.q].shape[-1] // op.heads
            out.append(_neuron(plan, stage.name, sn, d, _range(plan, op.dst), plan.tokens))
        elif stage.kind == "cospike":
            op, sn = ops
            for name in stage.srcs:
                buf = plan.buffers[name]
                read(stage, buf)
                out.append(_event_queue(plan, stage.name, buf, (buf.tokens * buf.channels - 1).bit_length()))
            core, count = _cospike(plan, stage.name, op, int(plan.types[op.k].hi))
            out.append(core)
            out.append(_neuron(plan, stage.name, sn, P, _range(plan, op.dst), 1))
        else:
            raise ValueError(f"unknown stage kind {stage.kind!r}")

    # the top: one memory per buffer (the pixel buffer is also written by the bus), the controller
    mems = [Memory(f"buffer {b.name}", b.word_width, b.depth, read_ports=max(1, readers.get(b.name, 0)))
            for b in plan.buffers.values()]
    out.append(Core("top", "controller and host bus",
                    {"stages": len(plan.stages), "logit_bits": plan.classes * 64}, mems))
    out.append(Core("board", "UART bridge, PLL, LEDs", {}, [Memory("uart bridge buffer", 32, 64)]))
    return out


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
        if m.name.endswith((".queue", ".fifo")):
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


def core_features(core: Core) -> dict[str, float]:
    """The features of ``core``'s LUT/FF model: its size features and its memories'."""
    return {"n": 1.0, **core.features, **memory_features(core.memories)}


def _core_resources(core: Core) -> dict[str, float]:
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
    from ..ir import golden
    _, env = golden.run(plan.graph, np.asarray(x), trace=True)
    out = {}
    for b in spikes:
        v = np.asarray(env[b.name]).reshape(len(x), plan.timesteps, b.tokens, b.channels)
        out[b.name] = (v != 0).sum(-1).mean(0).astype(float)
    return out, f"mean of {len(x)} samples"


def cycles(plan, x: np.ndarray | None = None) -> tuple[float, dict[str, float], str]:
    """``(cycles per inference, cycles per stage, activity)`` from the cores' cycle formulas."""
    k, activity = _events_per_token(plan, x)
    P, N, T = plan.lanes, plan.tokens, plan.timesteps
    per_stage: dict[str, float] = {}
    for t in range(T):
        for stage in plan.stages:
            if stage.once and t > 0:
                continue
            ops = [plan.op(n) for n in stage.ops]
            c = 2.0 + _STAGE_OVERHEAD[stage.kind]                 # GO and WAIT states of the controller
            if stage.kind == "stem":
                conv = ops[0]
                I = int(np.prod(conv.weight.shape[1:]))
                G = _groups(conv.weight.shape[0], P)
                c += I + N * G * I
            elif stage.kind == "residual_neuron":
                c += N * plan.buffers[stage.srcs[0]].groups
            elif stage.kind in ("dense_neuron", "dense_residual"):
                dense = ops[0]
                G = _groups(dense.weight.shape[0], P)
                src = plan.buffers[stage.srcs[0]]
                ev = k[src.name][t]
                if len(stage.srcs) > 1 and plan.buffers[stage.srcs[1]].kind == "spikes" \
                        and plan.buffers[stage.srcs[1]].tokens == 1:
                    mask = k[stage.srcs[1]][t].sum() / max(1, plan.buffers[stage.srcs[1]].channels)
                    ev = ev * mask
                c += float(np.sum(ev * G + G + 6 + _FRAME_OVERHEAD[stage.kind]))
            elif stage.kind == "head":
                dense = ops[1]
                G = _groups(dense.weight.shape[0], P)
                ev = k[stage.srcs[0]][t]
                c += float(np.sum(ev) * G + N * _FRAME_OVERHEAD["head"])
                if t == T - 1:
                    c += G + 6
            elif stage.kind == "linear_attention":
                op = ops[0]
                H = op.heads
                C = plan.types[op.q].shape[-1]
                e = [max(1.0, float(np.sum(k[s][t]))) for s in stage.srcs]
                depth = 7 + _division_depth(N, C, H)
                c += sum(e) + 3 * depth + max(N * H + 3, N << _index_bits(H), C) + 3
            elif stage.kind == "cospike":
                op = ops[0]
                C = plan.types[op.k].shape[-1]
                e = [max(1.0, float(np.sum(k[s][t]))) for s in stage.srcs]
                c += sum(e) + 7 + _groups(C, P) + 5
            per_stage[stage.name] = per_stage.get(stage.name, 0.0) + c
    return float(sum(per_stage.values())), per_stage, activity


def _division_depth(N: int, C: int, H: int) -> int:
    """Pipeline stages of the attention unit's address division (``hdl.attention._division_stages``)."""
    def stages(q, div):
        return -(-q // 4) if div & (div - 1) else 0
    return stages((N - 1).bit_length(), C) + stages((H - 1).bit_length(), C // H)


# -- the estimate ---------------------------------------------------------------------------------------

@dataclass
class Estimate:
    lanes: int
    resources: dict[str, int]                      # LUT4, FF, DP16KD, MULT18X18D; DPR16X4 (distributed RAM)
    cycles_per_inference: float
    cycles_per_stage: dict[str, float]
    activity: str                                  # "mean of N samples" or "worst case"
    memories: list[tuple[Memory, Mapping]]
    cores: list[Core]
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
    core_list = cores(plan)
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
    total, per_stage, activity = cycles(plan, x)
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
    divisor tried, or ``(0, ...)`` if none fits."""
    dim = graph.ops[0].weight.shape[0]
    limits = routable_totals(totals)
    tried = []
    for p in sorted((p for p in range(1, dim + 1) if dim % p == 0), reverse=True):
        est = estimate(plan_for(p))
        tried.append((p, est))
        if not fit_problems(est.resources, limits):
            return p, tried
    return 0, tried
