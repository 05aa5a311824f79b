"""Multi-threshold LIF neuron for P lanes (``ir.Neuron``), and the lane-stream pieces shared with the
requantizer (``hdl/requant.py``) and the stem (``hdl/pixel_conv.py``).

Lane streams
------------
Every core here takes and gives *lane groups*: one beat carries ``P`` channels ``g*P .. g*P+P-1`` of one
token, as a ``data.StructLayout`` with ``group`` (``unsigned(field_width(G))``, ``G = ceil(O / P)``),
``token`` (``unsigned(field_width(N))``), ``values`` (``ArrayLayout(shape, P)``) and ``last`` (end of a
frame; the cores pass it through). Lanes past ``O`` in the last group are padding.

Pipelines
---------
The cores are free-running pipelines (no stall inside) that end in an :class:`OutputQueue`: a FIFO and an
occupancy counter. A beat enters only while the queue has room for everything already in flight, so the
pipeline never needs to stop and no wide enable fans out to its registers; ``ready`` is a compare on a small
counter. With ``o.ready`` held high every core takes one beat per cycle.

ECP5 primitives
---------------
On the ECP5 at speed grade 6, an inferred DP16KD block RAM has a 5.8 ns clock-to-output and an inferred
(combinational) MULT18X18D 3.9 ns between fabric registers: either alone caps a design at about 120-135 MHz.
Every memory read (:func:`lane_memory`) and product (:func:`ecp5_multiply`) therefore takes two cycles, and
with ``ecp5`` they are built from DP16KD / MULT18X18D instances whose own registers fill those cycles
(output register; input and output registers). The generic build (Amaranth memories and registers, for
the simulator and other FPGAs) has the same cycle behaviour; ``ecp5="model"`` simulates the ECP5 structure
with behavioural models of the two primitives (:class:`DP16KDModel`, :class:`MULT18X18DModel`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import (Array, Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Shape, Signal,
                          Value, signed, unsigned)
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .packing import groups as _groups
from .packing import pack_weights, signed_width

__all__ = ["NeuronUnit", "OutputQueue", "field_width", "index_bits", "lane_layout", "lane_memory", "lane_rom",
           "ecp5_multiply", "use_ecp5", "DP16KDModel", "MULT18X18DModel"]


# -- shared pieces ----------------------------------------------------------------------------------

def index_bits(count: int) -> int:
    """Address bits that select one of ``count`` items (0 for a single item)."""
    return (count - 1).bit_length()


def field_width(count: int) -> int:
    """Width of a stream's index field for ``count`` items (at least one bit)."""
    return max(1, index_bits(count))


def lane_layout(groups: int, tokens: int, lanes: int, values_name: str, value_shape, **extra) -> data.StructLayout:
    """``{group, token, <extra>..., <values_name>: ArrayLayout(value_shape, lanes), last}``."""
    return data.StructLayout({
        "group": unsigned(field_width(groups)),
        "token": unsigned(field_width(tokens)),
        **extra,
        values_name: data.ArrayLayout(value_shape, lanes),
        "last": 1,
    })


def _check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value!r}")
    return value


def _check_array(name: str, value, ndim: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"{name} must be an integer array, not {value!r}")
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, not shape {arr.shape}")
    return arr.astype(np.int64)


BRAM_MIN_DEPTH = 33
"""With ``ecp5``, memories at least this deep are built from DP16KD block RAMs; shallower ones stay Amaranth
memories (yosys makes them LUT RAM or LUT logic, which is cheaper and fast)."""


def use_ecp5(setting, platform) -> bool | str:
    """Resolve a core's ``ecp5`` argument: None follows the platform (``platform.family == "ecp5"``)."""
    if setting is None:
        return getattr(platform, "family", None) == "ecp5"
    return setting


def _check_ecp5(value):
    if value not in (None, False, True, "model"):
        raise ValueError(f"ecp5 must be None, False, True or 'model', not {value!r}")
    return value


def ecp5_primitive(ecp5, kind: str, **kwargs):
    """``Instance(kind, **kwargs)``, or with ``ecp5="model"`` a behavioural model of it for the simulator."""
    if ecp5 == "model":
        return {"DP16KD": DP16KDModel, "MULT18X18D": MULT18X18DModel}[kind](**kwargs)
    return Instance(kind, **kwargs)


def lane_memory(m: Module, name: str, *, width: int, depth: int, read_addr, init=(), write=None, ecp5=False):
    """A memory of ``depth`` words of ``width`` bits; returns the read data, **two cycles** after ``read_addr``.

    ``write`` is ``(addr, data, en)`` or None (a ROM of ``init``). Without ``ecp5`` (or below
    ``BRAM_MIN_DEPTH`` words) it is an Amaranth memory with a synchronous read port and a register after
    it. With ``ecp5`` it is built from DP16KD block RAMs in 512 x 36 pseudo-dual-port mode with the
    output registers on (``REGMODE_A = REGMODE_B = "OUTREG"``: in 36-bit mode the low half of the read
    word leaves through port A's register, the high half through port B's), which takes the block's
    5.6 ns clock-to-output (speed grade 6) off the fabric: the address register inside the block is the
    first cycle, the output registers the second. Deeper memories are banks of 512 words, selected after
    the output registers. The contents are laid out as yosys lays out an inferred 36-bit DP16KD (word
    ``w``'s low 18 bits on port A, high 18 bits on port B; ``INITVAL`` holds 18-bit units at a 20-bit
    pitch). A write and a read of the same word in the same cycle are not allowed (the cores never do
    that).
    """
    init = [int(w) for w in init]
    out = Signal(width, name=f"{name}_data", reset_less=True)
    if not ecp5 or depth < BRAM_MIN_DEPTH:
        mem = memory.Memory(shape=unsigned(width), depth=depth, init=init)
        m.submodules[name] = mem
        if write is not None:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(write[0]), wp.data.eq(write[1]), wp.en.eq(write[2])]
        rp = mem.read_port()
        m.d.comb += rp.addr.eq(read_addr)
        m.d.sync += out.eq(rp.data)
        return out
    banks = -(-depth // 512)
    columns = -(-width // 36)
    raddr = Cat(read_addr, Const(0, 32))
    if write is None:
        waddr, wdata, wen = Const(0, 9), Const(0, 36 * columns), Const(0, 1)
    else:
        waddr, wdata, wen = Cat(write[0], Const(0, 32)), Cat(write[1], Const(0, 36 * columns)), write[2]
    outs = []
    for bank in range(banks):
        words = init[bank * 512:(bank + 1) * 512]
        bank_wen = wen & (waddr[9:] == bank) if banks > 1 else wen
        cols = []
        for col in range(columns):
            units = []
            for w in words:
                chunk = (w >> (36 * col)) & ((1 << 36) - 1)
                units += [chunk & 0x3FFFF, chunk >> 18]
            units += [0] * (1024 - len(units))
            params = {f"p_INITVAL_{k:02X}": Const(sum(units[k * 16 + i] << (20 * i) for i in range(16)), 320)
                      for k in range(64)}
            do = Signal(36, name=f"{name}_b{bank}c{col}_do")
            ports = {"i_CLKA": ClockSignal(), "i_CLKB": ClockSignal(), "i_WEA": Const(1, 1), "i_WEB": Const(0, 1),
                     "i_CEA": bank_wen, "i_CEB": Const(1, 1), "i_OCEA": Const(1, 1), "i_OCEB": Const(1, 1),
                     "i_RSTA": Const(0, 1), "i_RSTB": Const(0, 1)}
            for k in range(3):
                ports[f"i_CSA{k}"] = ports[f"i_CSB{k}"] = Const(0, 1)
            for k in range(14):
                ports[f"i_ADA{k}"] = Const(1, 1) if k < 4 else (Const(0, 1) if k == 4 else waddr[k - 5])
                ports[f"i_ADB{k}"] = Const(0, 1) if k < 5 else raddr[k - 5]
            for k in range(18):
                ports[f"i_DIA{k}"] = wdata[36 * col + k]
                ports[f"i_DIB{k}"] = wdata[36 * col + 18 + k]
                ports[f"o_DOA{k}"] = do[k]
                ports[f"o_DOB{k}"] = do[18 + k]
            m.submodules[f"{name}_b{bank}c{col}"] = ecp5_primitive(
                ecp5, "DP16KD", p_DATA_WIDTH_A=36, p_DATA_WIDTH_B=36, p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED", **params, **ports)
            cols.append(do)
        outs.append(Cat(*cols))
    if banks == 1:
        m.d.comb += out.eq(outs[0])
    else:
        sel1 = Signal(range(banks), name=f"{name}_bank1")
        sel2 = Signal(range(banks), name=f"{name}_bank2")
        m.d.sync += [sel1.eq(raddr[9:]), sel2.eq(sel1)]        # aligned with the output registers
        m.d.comb += out.eq(Array(outs)[sel2])
    return out


def ecp5_multiply(m: Module, name: str, a, b, ecp5=False):
    """``a * b`` for operands of at most 18 bits signed (17 unsigned), **two cycles** after ``a`` and ``b``.

    Without ``ecp5`` a register on each operand and one on the product (yosys maps the product to a
    combinational MULT18X18D). With ``ecp5`` a MULT18X18D instance with its input and output registers on,
    the multiplier's 3.9 ns then lying between two of its own registers."""
    # an unsigned operand becomes signed with a zero sign bit
    a, b = ((v if v.shape().signed else Cat(v, Const(0, 1)).as_signed()) for v in (Value.cast(a), Value.cast(b)))
    assert len(a) <= 18 and len(b) <= 18
    product = Signal(signed(len(a) + len(b)), name=f"{name}_p")
    if not ecp5:
        a1 = Signal(a.shape(), name=f"{name}_a", reset_less=True)
        b1 = Signal(b.shape(), name=f"{name}_b", reset_less=True)
        m.d.sync += [a1.eq(a), b1.eq(b), product.eq(a1 * b1)]
        return product
    p36 = Signal(signed(36), name=f"{name}_p36")
    ports = {}
    for k in range(18):
        ports[f"i_A{k}"] = a[min(k, len(a) - 1)]       # sign-extended to 18 bits
        ports[f"i_B{k}"] = b[min(k, len(b) - 1)]
        ports[f"i_C{k}"] = Const(0, 1)
    for k in range(36):
        ports[f"o_P{k}"] = p36[k]
    for k in range(4):
        ports[f"i_CLK{k}"] = ClockSignal() if k == 0 else Const(0, 1)
        ports[f"i_CE{k}"] = Const(1 if k == 0 else 0, 1)
        ports[f"i_RST{k}"] = Const(0, 1)
    m.submodules[name] = ecp5_primitive(
        ecp5, "MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
        p_REG_PIPELINE_CLK="NONE", p_REG_INPUTC_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
        p_MULT_BYPASS="DISABLED", i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1),
        i_SOURCEB=Const(0, 1), **ports)
    m.d.comb += product.eq(p36)
    return product


class DP16KDModel(Elaboratable):
    """Behavioural model of a DP16KD as ``lane_memory`` configures it (512 x 36 pseudo dual port: port A
    writes, port B reads; the low 18 bits of the read word leave through port A's output register, the
    high 18 through port B's), for simulating the ``ecp5`` structure."""

    def __init__(self, **kwargs):
        self._kw = kwargs

    def elaborate(self, platform):
        kw = self._kw
        expect = {"p_DATA_WIDTH_A": 36, "p_DATA_WIDTH_B": 36, "p_REGMODE_A": "OUTREG", "p_REGMODE_B": "OUTREG",
                  "p_WRITEMODE_A": "NORMAL"}
        for key, value in expect.items():
            assert kw[key] == value, (key, kw[key])
        units = []
        for k in range(64):
            value = kw[f"p_INITVAL_{k:02X}"].value
            units += [(value >> (20 * i)) & 0x3FFFF for i in range(16)]
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=36, depth=512,
                                               init=[units[2 * w] | (units[2 * w + 1] << 18) for w in range(512)])
        wp, rp = mem.write_port(), mem.read_port()
        bit = lambda key: Value.cast(kw[key])                       # noqa: E731
        out = Signal(36)
        m.d.comb += [
            wp.addr.eq(Cat(bit(f"i_ADA{k}") for k in range(5, 14))),
            wp.data.eq(Cat(*(bit(f"i_DIA{k}") for k in range(18)), *(bit(f"i_DIB{k}") for k in range(18)))),
            wp.en.eq(bit("i_CEA") & bit("i_WEA") & Cat(bit(f"i_ADA{k}") for k in range(4)).all()),
            rp.addr.eq(Cat(bit(f"i_ADB{k}") for k in range(5, 14))),
            rp.en.eq(bit("i_CEB")),
        ]
        with m.If(bit("i_OCEA")):
            m.d.sync += out[:18].eq(rp.data[:18])
        with m.If(bit("i_OCEB")):
            m.d.sync += out[18:].eq(rp.data[18:])
        m.d.comb += [kw[f"o_DOA{k}"].eq(out[k]) for k in range(18)]
        m.d.comb += [kw[f"o_DOB{k}"].eq(out[18 + k]) for k in range(18)]
        return m


class MULT18X18DModel(Elaboratable):
    """Behavioural model of a MULT18X18D as ``ecp5_multiply`` configures it (signed, input and output
    registers on CLK0), for simulating the ``ecp5`` structure."""

    def __init__(self, **kwargs):
        self._kw = kwargs

    def elaborate(self, platform):
        kw = self._kw
        for key in ("p_REG_INPUTA_CLK", "p_REG_INPUTB_CLK", "p_REG_OUTPUT_CLK"):
            assert kw[key] == "CLK0", key
        assert kw["p_REG_PIPELINE_CLK"] == "NONE"
        m = Module()
        a, b, p = Signal(signed(18)), Signal(signed(18)), Signal(signed(36))
        m.d.sync += [
            a.eq(Cat(Value.cast(kw[f"i_A{k}"]) for k in range(18))),
            b.eq(Cat(Value.cast(kw[f"i_B{k}"]) for k in range(18))),
            p.eq(a * b),
        ]
        m.d.comb += [kw[f"o_P{k}"].eq(p[k]) for k in range(36)]
        return m


def lane_rom(m: Module, name: str, rows: list[np.ndarray], width: int, lanes: int, addr, ecp5=False) -> list:
    """A read-only memory of lane-group words, one word per (row, group), and its ``P`` lane outputs.

    ``rows`` are per-channel vectors ``[O]`` (several for a per-token parameter); word
    ``r * 2**index_bits(G) + g`` holds row ``r``'s group ``g`` in the layout of
    ``hdl.packing.pack_weights`` (lane ``l`` in bits ``[l*width, (l+1)*width)``), so ``addr`` is
    ``Cat(group, row)``. The outputs are valid **two cycles** after ``addr`` (see :func:`lane_memory`). A
    parameter that is the same in every row and channel needs no memory: the outputs are then constants.
    """
    flat = np.concatenate(rows)
    if (flat == flat[0]).all():
        return [Const(int(flat[0]), signed(width))] * lanes
    g = _groups(len(rows[0]), lanes)
    stride = 1 << index_bits(g)
    words = []
    for row in rows:
        packed = pack_weights(np.asarray(row).reshape(-1, 1), width, lanes)
        words += packed + [0] * (stride - g)
    word = lane_memory(m, name, width=lanes * width, depth=len(words), read_addr=addr, init=words, ecp5=ecp5)
    view = data.ArrayLayout(signed(width), lanes)(word)
    return [view[lane] for lane in range(lanes)]


def _thermometer_count(ge: list) -> Value:
    """The number of ones of a thermometer code (``ge[k]`` implies ``ge[k-1]``: thresholds are sorted),
    as a few LUTs per output bit rather than an adder: bit ``j`` is set where the code ends at a count
    with bit ``j`` set."""
    ends = [ge[k] & ~ge[k + 1] if k + 1 < len(ge) else ge[k] for k in range(len(ge))]   # count == k + 1
    width = len(ge).bit_length()
    bits = []
    for j in range(width):
        terms = [ends[k] for k in range(len(ge)) if (k + 1) >> j & 1]
        bits.append(Cat(*terms).any() if terms else Const(0, 1))
    return Cat(*bits)


class OutputQueue(wiring.Component):
    """The end of a free-running pipeline: an output FIFO and the credit that keeps it from overflowing.

    The pipeline asserts ``accept`` in each cycle in which work that will produce one output entry enters
    it; ``credit`` says whether that may happen in this cycle (the entries accepted and not yet taken from
    ``o`` are fewer than ``depth``). ``w_en``/``w_data`` write a result into the FIFO, which the credit
    guarantees has room.

    Parameters
    ----------
    layout : data.Layout
        Payload of ``o``.
    depth : int
        Entries of the FIFO; at least the pipeline's latency plus 3 for one entry per cycle.

    Members
    -------
    accept : In(1)
    credit : Out(1)
    w_en : In(1)
    w_data : In(layout)
    o : Out(stream.Signature(layout))
    """

    def __init__(self, layout, depth: int):
        self._depth = _check_int("depth", depth, 2)
        super().__init__({
            "accept": In(1),
            "credit": Out(1),
            "w_en": In(1),
            "w_data": In(layout),
            "o": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(self.w_data.shape()).width,
                                                    depth=self._depth)
        # the entries accepted before the previous cycle and not yet taken, and the previous cycle's
        # accept: the credit is a function of registers only (accept does not reach the counter's adder)
        occupancy = Signal(range(self._depth + 1))
        accepted = Signal()
        pop = fifo.r_rdy & self.o.ready
        m.d.sync += [accepted.eq(self.accept), occupancy.eq(occupancy + accepted - pop)]
        m.d.comb += [
            fifo.w_en.eq(self.w_en),
            fifo.w_data.eq(self.w_data.as_value()),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
            self.credit.eq(Mux(accepted, occupancy < self._depth - 1, occupancy < self._depth)),
        ]
        return m


# -- the neuron -------------------------------------------------------------------------------------

class NeuronUnit(wiring.Component):
    """Multi-threshold LIF neuron (``ir.Neuron``, docs/semantics.md) on ``P`` lanes, one lane group per cycle.

    Per channel ``o``: ``X = sign*(IN << frac) + bias``, ``H = V - (V >> leak_shift) + X``,
    ``level = #{k : H >= theta[o, k]}``, ``V = H if level == 0 else 0``; ``V`` is taken as 0 on a beat
    with ``first`` set (the first time step). Only adders and comparators: no multiplier.

    The membrane ``V`` lives in a memory of ``N * 2**index_bits(G)`` words of ``P`` lanes, addressed by
    ``Cat(group, token)``; it is read when a beat enters and written when it leaves. In one time step each
    ``(token, group)`` must come once (in any order); a beat whose ``(token, group)`` is still in the
    pipeline from the previous step waits until that one has written its membrane (this costs cycles
    only when ``N * G`` is below the pipeline depth, 7, or when beats come out of order: the check
    compares the group and the token's low bits only, so it may stall needlessly, never too little).
    ``sign``, ``bias`` and each threshold column live in read-only memories of one word per lane group,
    unless equal for every channel (then they are constants: the residual-stream neurons need no
    parameter memory). The widths are derived from the parameters and the input range and lie within
    the IR's ``membrane_range``; thresholds are clamped into ``[min H, max H + 1]``, which changes no
    comparison.

    Pipeline (``Rk`` is the k-th register stage; a memory read takes two): the accepted beat addresses
    the sign and membrane memories (data with R2), R1 the bias (with R3), R3 the thresholds (with R5);
    R3 holds ``IN``, ``~IN`` or 0 and the leaked membrane, R4 ``X``, R5 ``H``, R6 the comparisons, R7
    the levels (a thermometer code's count: LUTs, no adder) and the new membrane, which is written back
    as R7 enters the output FIFO. Latency 7 cycles into the FIFO (9 to ``o``), one beat per cycle. Lanes
    past ``O`` give level 0.

    Parameters
    ----------
    lanes : int
        ``P``, channels per beat.
    in_width : int
        Signed width of the input values.
    levels : int
        ``D``, thresholds per channel (output levels 0..D).
    sign, bias : array [O]
        Per-channel sign (-1, 0 or 1) and integer bias.
    frac : int
        Left shift of the input.
    theta : array [O, D]
        Thresholds, non-decreasing along the second axis.
    leak_shift : int
        ``log2(tau)``; 0 makes the membrane irrelevant (``V - V = 0``), so no membrane memory is built.
    tokens : int
        ``N``, tokens per time step (the membrane memory holds ``N`` tokens).
    stateful : bool
        False when ``T == 1``: no membrane memory, ``H = X``.
    in_range : (int, int), optional
        Inclusive range of the input values, if narrower than ``in_width`` allows (narrows the datapath).
    ecp5 : bool or "model", optional
        Build memories of at least ``BRAM_MIN_DEPTH`` words from DP16KD block RAMs with their output
        register (see :func:`lane_memory`); None (default) does so when elaborated for an ECP5 platform
        (``platform.family == "ecp5"``); out-of-context synthesis (``bench.synth``, no platform) needs
        True. ``"model"`` builds the same structure with behavioural models, for the simulator.
    src_loc_at : int
        As for any Amaranth component.

    Members
    -------
    i : In(stream.Signature(in_layout))
        ``{group, token, first, values: Array(signed(in_width), P), last}`` (``first`` marks the first time
        step; a stateless unit ignores it).
    o : Out(stream.Signature(out_layout))
        ``{group, token, levels: Array(unsigned(level_width), P), last}``, in input order.
    """

    LATENCY = 7

    def __init__(self, *, lanes, in_width, levels, sign, bias, frac, theta, leak_shift, tokens, stateful,
                 in_range=None, ecp5=None, src_loc_at=0):
        self._ecp5 = _check_ecp5(ecp5)
        self._lanes = _check_int("lanes", lanes, 1)
        self._in_width = _check_int("in_width", in_width, 1)
        self._levels = _check_int("levels", levels, 1)
        self._frac = _check_int("frac", frac, 0, 62)
        self._leak = _check_int("leak_shift", leak_shift, 0, 62)
        self._tokens = _check_int("tokens", tokens, 1)
        if not isinstance(stateful, (bool, np.bool_)):
            raise TypeError(f"stateful must be a bool, not {stateful!r}")
        sign = _check_array("sign", sign, (1,))
        bias = _check_array("bias", bias, (1,))
        theta = _check_array("theta", theta, (2,))
        out = len(sign)
        if out == 0:
            raise ValueError("sign must have at least one channel, not shape (0,)")
        if bias.shape != (out,) or theta.shape != (out, self._levels):
            raise ValueError(f"bias {bias.shape} and theta {theta.shape} do not match {out} channels "
                             f"x {self._levels} levels")
        if not np.isin(sign, (-1, 0, 1)).all():
            raise ValueError(f"sign must hold -1, 0 or 1, not {sorted(set(sign.tolist()))!r}")
        if not (np.diff(theta, axis=1) >= 0).all():
            raise ValueError("theta must be non-decreasing along the levels axis")
        ilo, ihi = -(1 << (self._in_width - 1)), (1 << (self._in_width - 1)) - 1
        if in_range is not None:
            lo, hi = (int(v) for v in in_range)
            if not ilo <= lo <= hi <= ihi:
                raise ValueError(f"in_range must lie within signed {self._in_width} bits, not {in_range!r}")
            ilo, ihi = lo, hi
        self._stateful = bool(stateful) and self._leak > 0
        self._out = out

        # X = sign * (IN << frac) + bias, over the input range
        ends = [int(s) * (v << self._frac) + int(b) for s, b in zip(sign, bias) for v in (ilo, ihi)]
        xlo, xhi = min(ends), max(ends)
        if self._stateful:
            # invariants: V >= min(0, xlo << L) (the leak's fixed point), V <= xhi << L likewise, and a
            # kept membrane is below its channel's first threshold
            L = self._leak
            vlo = min(0, xlo << L)
            vhi = max(0, min(max(int(t) - 1 for t in theta[:, 0]), xhi << L))
            llo, lhi = vlo - (vlo >> L), vhi - (vhi >> L)
            hlo, hhi = llo + xlo, lhi + xhi
        else:
            vlo = vhi = llo = lhi = 0
            hlo, hhi = xlo, xhi
        self._x_range = (xlo, xhi)
        self._v_range = (vlo, vhi)
        self._leak_range = (llo, lhi)
        self._h_range = (hlo, hhi)
        # the sign is applied as ~IN (= -IN - 1); the missing 1 << frac goes into the bias
        self._sign = sign
        self._bias = bias + np.where(sign == -1, 1 << self._frac, 0)
        self._theta = np.clip(theta, hlo, hhi + 1)

        self._groups = _groups(out, self._lanes)
        self.in_layout = lane_layout(self._groups, self._tokens, self._lanes, "values",
                                     signed(self._in_width), first=1)
        self.out_layout = lane_layout(self._groups, self._tokens, self._lanes, "levels",
                                      unsigned(self.level_width))
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        }, src_loc_at=1 + src_loc_at)

    @classmethod
    def from_op(cls, op, *, lanes: int, in_width: int, tokens: int, timesteps: int, in_range=None, ecp5=None):
        """The unit for an ``ir.Neuron`` op (read by attribute; ``hdl`` does not import the compiler)."""
        return cls(lanes=lanes, in_width=in_width, levels=op.levels, sign=op.sign, bias=op.bias,
                   frac=op.frac, theta=op.theta, leak_shift=op.leak_shift, tokens=tokens,
                   stateful=timesteps > 1, in_range=in_range, ecp5=ecp5, src_loc_at=1)

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def groups(self) -> int:
        return self._groups

    @property
    def level_width(self) -> int:
        return self._levels.bit_length()

    @property
    def stateful(self) -> bool:
        """Whether the unit keeps a membrane (T > 1 and leak_shift > 0)."""
        return self._stateful

    @property
    def membrane_range(self) -> tuple[int, int]:
        """Inclusive range of H (the compared membrane) that the datapath is sized for."""
        return self._h_range

    @property
    def membrane_width(self) -> int:
        """Signed width of the stored membrane V (0 when stateless)."""
        return signed_width(*self._v_range) if self._stateful else 0

    def elaborate(self, platform):
        m = Module()
        P, D = self._lanes, self._levels
        ecp5 = use_ecp5(self._ecp5, platform)
        gbits, tbits = index_bits(self._groups), index_bits(self._tokens)
        xw = signed_width(*self._x_range)
        vw = signed_width(*self._v_range)
        lw = signed_width(*self._leak_range)
        hw = signed_width(self._h_range[0], self._h_range[1] + 1)
        bw = signed_width(int(self._bias.min()), int(self._bias.max()))
        L = self.LATENCY

        m.submodules.queue = queue = OutputQueue(self.out_layout, L + 4)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        def addr_of(p):
            return Cat(p.group[:gbits], p.token[:tbits])

        def stage(name, shape, value):
            if isinstance(value, Const):
                return value                # a constant parameter stays a constant
            reg = Signal(shape, name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        # R1, R2 carry the beat; later stages only its group, token, first and last
        tag_layout = data.StructLayout({"group": self.in_layout["group"].shape,
                                        "token": self.in_layout["token"].shape, "first": 1, "last": 1})
        meta, valid = [self.i.payload], [Signal(name="valid0")]
        for k in range(1, L + 1):
            meta.append(Signal(self.in_layout if k < 3 else tag_layout, name=f"meta{k}", reset_less=True))
            valid.append(Signal(name=f"valid{k}"))
            m.d.sync += valid[k].eq(valid[k - 1])
            if k < 3:
                m.d.sync += meta[k].eq(meta[k - 1])
            else:
                m.d.sync += [getattr(meta[k], f).eq(getattr(meta[k - 1], f))
                             for f in ("group", "token", "first", "last")]

        # hazard: the membrane of this (token, group) may still be being computed for the previous step.
        # The check compares the group and only the token's low bits, enough to tell apart every token
        # within the pipeline's reach when beats come in order (token by token, groups in order); in
        # another order an alias only costs a stall cycle, never a wrong membrane.
        hazard = Signal()
        if self._stateful:
            tcheck = min(tbits, (-(-L // self._groups)).bit_length())

            def key(p):
                return Cat(p.group[:gbits], p.token[:tcheck])
            hits = [valid[k] & (key(meta[k]) == key(self.i.payload)) for k in range(1, L + 1)]
            m.d.comb += hazard.eq(~self.i.payload.first & Cat(*hits).any())
        m.d.comb += [
            self.i.ready.eq(queue.credit & ~hazard),
            valid[0].eq(self.i.valid & self.i.ready),
            queue.accept.eq(valid[0]),
        ]

        # memories (read data two cycles after the address): sign and membrane from the input beat (-> R2),
        # bias from R1 (-> R3), thresholds from R3 (-> R5); the membrane is written from R6
        sign2 = lane_rom(m, "sign", [self._sign], 2, P, self.i.payload.group[:gbits], ecp5)
        bias3 = lane_rom(m, "bias", [self._bias], bw, P, meta[1].group[:gbits], ecp5)
        theta5 = [lane_rom(m, f"theta{k}", [self._theta[:, k]], hw, P, meta[3].group[:gbits], ecp5)
                  for k in range(D)]
        if self._stateful:
            v_write = Signal(data.ArrayLayout(signed(vw), P))
            v2 = data.ArrayLayout(signed(vw), P)(lane_memory(
                m, "membrane", width=P * vw, depth=self._tokens << gbits, read_addr=addr_of(self.i.payload),
                write=(addr_of(meta[L]), v_write.as_value(), valid[L]), ecp5=ecp5))

        levels = []
        lane_limit = self._out - (self._groups - 1) * P     # lanes of the last group that exist
        keep6 = Signal(name="keep6")                        # 0 when R6 holds the last group (its padding lanes)
        m.d.sync += keep6.eq(meta[5].group != self._groups - 1)
        for lane in range(P):
            s2, x2 = sign2[lane], meta[2].values[lane]
            # R2 -> R3: the selected input (IN, ~IN or 0) and the leaked membrane
            xsel3 = stage(f"xsel3_{lane}", signed(self._in_width), Mux(s2[0], Mux(s2[1], ~x2, x2), 0))
            if self._stateful:
                v = v2[lane]
                leak3 = stage(f"leak3_{lane}", signed(lw), Mux(meta[2].first, 0, v - v.shift_right(self._leak)))
            else:
                leak3 = Const(0, signed(1))
            # R3 -> R4: X
            x4 = stage(f"x4_{lane}", signed(xw), (xsel3 << self._frac) + bias3[lane])
            leak4 = stage(f"leak4_{lane}", leak3.shape(), leak3)
            # R4 -> R5: H
            h5 = stage(f"h5_{lane}", signed(hw), x4 + leak4)
            # R5 -> R6: compare; R6 -> R7: count, reset
            ge6 = stage(f"ge6_{lane}", D, Cat(h5 >= theta5[k][lane] for k in range(D)))
            count = _thermometer_count(list(ge6))
            if lane >= lane_limit:
                count = count & keep6.replicate(len(count))
            levels.append(stage(f"level7_{lane}", unsigned(self.level_width), count))
            if self._stateful:
                h6 = stage(f"h6_{lane}", signed(vw), h5)         # a kept membrane fits V's width
                m.d.comb += v_write[lane].eq(stage(f"vnext7_{lane}", signed(vw), Mux(ge6[0], 0, h6)))

        m.d.comb += [
            queue.w_en.eq(valid[L]),
            queue.w_data.group.eq(meta[L].group),
            queue.w_data.token.eq(meta[L].token),
            queue.w_data.last.eq(meta[L].last),
        ]
        m.d.comb += [queue.w_data.levels[lane].eq(levels[lane]) for lane in range(P)]
        return m
