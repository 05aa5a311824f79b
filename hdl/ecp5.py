"""Lattice ECP5 primitives for the cores: DP16KD block RAM and MULT18X18D multipliers, with their own
registers on, plus behavioural models of both for the Amaranth simulator; and a flip-flop that synthesis
keeps apart from its copies (:func:`own_register`).

Why
---
On the ECP5 at speed grade 6 an inferred DP16KD block RAM has a 5.6-5.8 ns clock-to-output (yosys maps a
``Memory`` to a DP16KD without its output register) and an inferred (combinational) MULT18X18D 3.9 ns
between fabric registers: either alone caps a core at about 120-140 MHz. Here every block-RAM read
(:func:`block_ram`) and every product (:func:`multiply`) takes **two cycles**, and on the ECP5 the
primitives' own registers fill them (the address register and the output register, ``REGMODE = OUTREG``;
the input and output registers of the multiplier).

Choosing the implementation
---------------------------
Every core takes the same ``ecp5`` argument (checked by :func:`check_ecp5`, resolved by :func:`use_ecp5`):

``None`` (default)
    ECP5 primitives when elaborated for a Lattice ECP5 platform (``platform.family == "ecp5"``), else as
    ``False``.
``True``
    ECP5 primitive instances, whatever the platform (out-of-context synthesis, ``bench.synth``, has none).
``"model"``
    The same structure built from :class:`DP16KDModel` and :class:`MULT18X18DModel`: the simulator runs
    the very wiring that is synthesized.
``False``
    ``amaranth.lib.memory.Memory`` with a register after its read port, and ``*`` between registers:
    the same cycle behaviour, for the simulator, Verilator and other FPGAs.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, ClockSignal, Const, Elaboratable, Instance, Module, Signal, Value, signed, unsigned
from amaranth.lib import memory

__all__ = ["check_ecp5", "use_ecp5", "block_ram", "bram_tiling", "multiply", "own_register", "DP16KDModel",
           "MULT18X18DModel", "BRAM_CONFIGS"]

#: DP16KD port configurations ``(width, depth)``; 36 bits wide, port A writes and port B reads.
BRAM_CONFIGS = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
_INIT_WIDTHS = (36, 18)       # configurations whose INITVAL layout is checked against yosys's own mapping


def check_ecp5(value):
    """Validate a core's ``ecp5`` argument (``None``, ``False``, ``True`` or ``"model"``) and return it."""
    if not (value is None or value is True or value is False or (isinstance(value, str) and value == "model")):
        raise ValueError(f"ecp5 must be None, False, True or 'model', not {value!r}")
    return value


def use_ecp5(setting, platform) -> bool | str:
    """Resolve a checked ``ecp5`` argument for ``platform``: ``None`` follows ``platform.family == "ecp5"``."""
    if setting is None:
        return getattr(platform, "family", None) == "ecp5"
    return setting


def _primitive(ecp5, kind: str, **kwargs):
    """``Instance(kind, **kwargs)``, or with ``ecp5="model"`` the behavioural model of it."""
    if ecp5 == "model":
        return {"DP16KD": DP16KDModel, "MULT18X18D": MULT18X18DModel}[kind](**kwargs)
    return Instance(kind, **kwargs)


def own_register(m: Module, name: str, d, *, init: int, ecp5) -> Signal:
    """A one-bit register of ``d`` in ``sync`` (initial value ``init``) that synthesis does not merge with
    other registers of the same input.

    Yosys's ``opt_merge`` turns registers with the same input into one, so copies meant to split a net of
    large fan-out (a reset copied beside each engine) become that net again. With ``ecp5 is True`` the
    register is a ``TRELLIS_FF`` instance, which ``opt_merge`` leaves alone; otherwise (simulation, other
    FPGAs) it is an ordinary register.
    """
    if ecp5 is True:
        q = Signal(name=name)
        m.submodules[name] = Instance(
            "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR", p_SRMODE="LSR_OVER_CE",
            p_REGSET="SET" if init else "RESET", i_CLK=ClockSignal("sync"), i_LSR=Const(0, 1), i_CE=Const(1, 1),
            i_DI=d, o_Q=q)
        return q
    q = Signal(name=name, init=init, reset_less=True)
    m.d.sync += q.eq(d)
    return q


# -- block RAM ------------------------------------------------------------------------------------------

def bram_tiling(width: int, depth: int, *, init: bool = False) -> tuple[int, int, int]:
    """The DP16KD configuration ``(port width, columns, rows)`` with the fewest blocks (then the fewest
    rows) for ``depth`` words of ``width`` bits; with ``init`` only the 36- and 18-bit configurations."""
    best = None
    for w, dc in BRAM_CONFIGS:
        if init and w not in _INIT_WIDTHS:
            continue
        cols, rows = -(-width // w), -(-depth // dc)
        if best is None or (cols * rows, rows) < (best[1] * best[2], best[2]):
            best = (w, cols, rows)
    return best


def _initval(units: list[int]) -> dict:
    """``INITVAL_00 .. INITVAL_3F`` for 1024 18-bit units, 16 per row at a 20-bit pitch (yosys's layout)."""
    units = list(units) + [0] * (1024 - len(units))
    return {f"p_INITVAL_{k:02X}": Const(sum(units[k * 16 + i] << (20 * i) for i in range(16)), 320)
            for k in range(64)}


def block_ram(m: Module, name: str, *, width: int, depth: int, read_addr, init=(), write=None, read_en=None,
              ecp5=False) -> Signal:
    """``depth`` words of ``width`` bits; returns the read data, **two cycles** after ``read_addr``.

    ``write`` is ``(addr, data, en)`` or None (a ROM of ``init``). ``read_en`` (default always) advances
    the read: the address is taken and both read stages load only with it, so a stalled reader keeps its
    data. A write and a read of the same word in the same cycle return an unspecified word.

    With ``ecp5`` (``True`` or ``"model"``) the memory is a grid of DP16KD blocks ``{name}_b{bank}c{column}``
    (:func:`bram_tiling`: the fewest blocks) with the output registers on: port A writes, port B reads (a
    36-bit word leaves through both output registers, its low half on ``DOA``, its high half on ``DOB``);
    the address register inside the block is the first cycle, the output register the second. A memory
    deeper than one block has banks of blocks, written by the write address's high bits and read through
    a multiplexer after the output registers on the read address's high bits (delayed with the read).
    The contents are laid out as yosys lays out an inferred DP16KD (``INITVAL`` holds 18-bit units at a
    20-bit pitch; a 36-bit word is two units, low half first), so initialized memories use the 36- and
    18-bit configurations only, the two checked against yosys. Without ``ecp5``, an Amaranth ``Memory``
    with a synchronous read port and a register after it.
    """
    init = [int(w) for w in init]
    read_en = Const(1, 1) if read_en is None else read_en
    out = Signal(width, name=f"{name}_data", reset_less=True)
    if not ecp5:
        mem = memory.Memory(shape=unsigned(width), depth=depth, init=init)
        m.submodules[name] = mem
        if write is not None:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(write[0]), wp.data.eq(write[1]), wp.en.eq(write[2])]
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(read_addr), rp.en.eq(read_en)]
        with m.If(read_en):
            m.d.sync += out.eq(rp.data)
        return out

    w, cols, rows = bram_tiling(width, depth, init=any(init))
    wdepth = dict(BRAM_CONFIGS)[w]
    lbits = wdepth.bit_length() - 1                       # word address bits inside one block
    shift = 14 - lbits                                    # their position on the AD[13:0] pins
    rbits = (rows - 1).bit_length()
    raddr = Cat(read_addr, Const(0, lbits + rbits))
    if write is None:
        waddr, wdata, wen = Const(0, lbits + rbits), Const(0, cols * w), Const(0, 1)
    else:
        waddr = Cat(write[0], Const(0, lbits + rbits))
        wdata, wen = Cat(write[1], Const(0, cols * w)), write[2]
    byte_enables = {36: 4, 18: 2}.get(w, 0)               # ADA[3:0] / ADA[1:0]: all bytes written

    def pin(addr, k):
        bit = k - shift
        return addr[bit] if 0 <= bit < lbits else Const(0, 1)

    outs = []
    for r in range(rows):
        row_out = Signal(cols * w, name=f"{name}_b{r}_do")
        outs.append(row_out)
        row_wen = wen & (waddr[lbits:lbits + rbits] == r) if rows > 1 else wen
        for c in range(cols):
            units = []
            for word in init[r * wdepth:(r + 1) * wdepth]:
                chunk = (word >> (c * w)) & ((1 << w) - 1)
                units += [chunk & 0x3FFFF, chunk >> 18] if w == 36 else [chunk]
            di, do = wdata[c * w:(c + 1) * w], row_out[c * w:(c + 1) * w]
            rom_a = write is None and w < 36          # a ROM up to 18 bits wide reads on port A alone
            ports = {"i_CLKA": ClockSignal(), "i_CLKB": ClockSignal(), "i_RSTA": Const(0, 1), "i_RSTB": Const(0, 1),
                     "i_CEA": read_en if rom_a else Const(1, 1), "i_WEA": row_wen, "i_OCEA": read_en,
                     "i_CEB": Const(0, 1) if rom_a else read_en, "i_OCEB": Const(0, 1) if rom_a else read_en,
                     "i_WEB": Const(0, 1)}
            for k in range(14):
                ports[f"i_ADA{k}"] = pin(raddr, k) if rom_a else pin(waddr, k) if k >= byte_enables else Const(1, 1)
                ports[f"i_ADB{k}"] = pin(raddr, k)
            for k in range(3):
                ports[f"i_CSA{k}"] = ports[f"i_CSB{k}"] = Const(0, 1)
            if w == 36:
                for k in range(18):
                    ports.update({f"i_DIA{k}": di[k], f"i_DIB{k}": di[18 + k],
                                  f"o_DOA{k}": do[k], f"o_DOB{k}": do[18 + k]})
            else:
                for k in range(w):
                    ports.update({f"i_DIA{k}": di[k], f"o_DO{'A' if rom_a else 'B'}{k}": do[k]})
            m.submodules[f"{name}_b{r}c{c}"] = _primitive(
                ecp5, "DP16KD", p_DATA_WIDTH_A=w, p_DATA_WIDTH_B=w, p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED", **_initval(units), **ports)
    if rows == 1:
        m.d.comb += out.eq(outs[0][:width])
    else:
        row1 = Signal(rbits, name=f"{name}_bank1", reset_less=True)
        row2 = Signal(rbits, name=f"{name}_bank2", reset_less=True)
        with m.If(read_en):                               # aligned with the address and output registers
            m.d.sync += [row1.eq(raddr[lbits:lbits + rbits]), row2.eq(row1)]
        m.d.comb += out.eq(Array(o[:width] for o in outs)[row2])
    return out


class _PrimitiveModel(Elaboratable):
    """A behavioural model built from an ``Instance``'s keyword arguments (``p_*``, ``i_*``, ``o_*``)."""

    def __init__(self, **kwargs):
        self._kw = kwargs

    def _pin(self, key):
        """An input pin's value (0 where the instance leaves it unconnected)."""
        return Value.cast(self._kw.get(key, Const(0, 1)))


class DP16KDModel(_PrimitiveModel):
    """Behavioural model of a DP16KD as :func:`block_ram` configures it, for the simulator.

    Port A writes (``CEA & WEA`` and, 36 or 18 bits wide, all byte enables ``ADA[3:0]`` / ``ADA[1:0]``);
    both ports read through their output registers (``REGMODE = "OUTREG"``; 36 bits wide, port B reads
    and the low half leaves through port A's output register on ``DOA``). A port ``w`` bits wide has its
    word address on ``AD[13:s]``, ``s = 0, 1, 2, 3, 4, 5`` for ``w = 1, 2, 4, 9, 18, 36`` (Lattice
    TN1264). ``INITVAL`` holds 18-bit units at a 20-bit pitch (36- and 18-bit configurations only).

    Parameters
    ----------
    **kwargs
        The ``Instance("DP16KD", ...)`` arguments.
    """

    def elaborate(self, platform):
        kw = self._kw
        w = kw["p_DATA_WIDTH_A"]
        if kw["p_DATA_WIDTH_B"] != w or w not in dict(BRAM_CONFIGS):
            raise ValueError(f"DP16KDModel models equal port widths of {dict(BRAM_CONFIGS)}, not "
                             f"{w!r} / {kw['p_DATA_WIDTH_B']!r}")
        if kw["p_REGMODE_B"] != "OUTREG" or (w == 36 and kw["p_REGMODE_A"] != "OUTREG"):
            raise ValueError("DP16KDModel models the read port with its output register (REGMODE = OUTREG)")
        depth = dict(BRAM_CONFIGS)[w]
        shift = 14 - (depth.bit_length() - 1)
        units = []
        for k in range(64):
            value = kw[f"p_INITVAL_{k:02X}"].value if f"p_INITVAL_{k:02X}" in kw else 0
            units += [(value >> (20 * i)) & 0x3FFFF for i in range(16)]
        if w == 36:
            init = [units[2 * a] | (units[2 * a + 1] << 18) for a in range(512)]
        elif w == 18:
            init = units
        else:
            if any(units):
                raise ValueError(f"DP16KDModel models INITVAL for 36 and 18 bits only, not {w!r}")
            init = []
        pin = self._pin
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=unsigned(w), depth=depth, init=init)
        wp, rp = mem.write_port(), mem.read_port()
        byte_enables = {36: 4, 18: 2}.get(w, 0)
        wen = pin("i_CEA") & pin("i_WEA")
        if byte_enables:
            wen &= Cat(pin(f"i_ADA{k}") for k in range(byte_enables)).all()
        if w == 36:
            wdata = Cat(*(pin(f"i_DIA{k}") for k in range(18)), *(pin(f"i_DIB{k}") for k in range(18)))
        else:
            wdata = Cat(pin(f"i_DIA{k}") for k in range(w))
        m.d.comb += [
            wp.addr.eq(Cat(pin(f"i_ADA{k}") for k in range(shift, 14))),
            wp.data.eq(wdata),
            wp.en.eq(wen),
            rp.addr.eq(Cat(pin(f"i_ADB{k}") for k in range(shift, 14))),
            rp.en.eq(pin("i_CEB")),
        ]
        out = Signal(w)
        if w == 36:
            with m.If(pin("i_OCEA")):
                m.d.sync += out[:18].eq(rp.data[:18])
            with m.If(pin("i_OCEB")):
                m.d.sync += out[18:].eq(rp.data[18:])
            m.d.comb += [kw[f"o_DOA{k}"].eq(out[k]) for k in range(18) if f"o_DOA{k}" in kw]
            m.d.comb += [kw[f"o_DOB{k}"].eq(out[18 + k]) for k in range(18) if f"o_DOB{k}" in kw]
        else:
            with m.If(pin("i_OCEB")):
                m.d.sync += out.eq(rp.data)
            m.d.comb += [kw[f"o_DOB{k}"].eq(out[k]) for k in range(w) if f"o_DOB{k}" in kw]
            rpa, out_a = mem.read_port(), Signal(w)       # port A reads too (a ROM reads on port A alone)
            m.d.comb += [rpa.addr.eq(wp.addr), rpa.en.eq(pin("i_CEA"))]
            with m.If(pin("i_OCEA")):
                m.d.sync += out_a.eq(rpa.data)
            m.d.comb += [kw[f"o_DOA{k}"].eq(out_a[k]) for k in range(w) if f"o_DOA{k}" in kw]
        return m


# -- multiplier -----------------------------------------------------------------------------------------

def multiply(m: Module, name: str, a, b, ecp5=False):
    """``a * b`` for operands of at most 18 bits signed (17 unsigned), **two cycles** after ``a`` and ``b``.

    Without ``ecp5`` a register on each operand and one on the product (yosys maps the product to a
    combinational MULT18X18D). With ``ecp5`` (``True`` or ``"model"``) a MULT18X18D with its input and
    output registers on, the multiplier's 3.9 ns then lying between two of its own registers.
    """
    # an unsigned operand becomes signed with a zero sign bit
    a, b = ((v if v.shape().signed else Cat(v, Const(0, 1)).as_signed()) for v in (Value.cast(a), Value.cast(b)))
    if len(a) > 18 or len(b) > 18:
        raise ValueError(f"multiply takes operands of at most 18 signed bits, not {len(a)} and {len(b)}")
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
    m.submodules[name] = _primitive(
        ecp5, "MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
        p_REG_PIPELINE_CLK="NONE", p_REG_INPUTC_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
        p_MULT_BYPASS="DISABLED", i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1),
        i_SOURCEB=Const(0, 1), **ports)
    m.d.comb += product.eq(p36)
    return product


class MULT18X18DModel(_PrimitiveModel):
    """Behavioural model of a MULT18X18D as :func:`multiply` configures it (signed, input and output
    registers on ``CLK0``), for the simulator.

    Parameters
    ----------
    **kwargs
        The ``Instance("MULT18X18D", ...)`` arguments.
    """

    def elaborate(self, platform):
        kw = self._kw
        regs = [kw[k] for k in ("p_REG_INPUTA_CLK", "p_REG_INPUTB_CLK", "p_REG_OUTPUT_CLK", "p_REG_PIPELINE_CLK")]
        if regs != ["CLK0", "CLK0", "CLK0", "NONE"]:
            raise ValueError(f"MULT18X18DModel models input and output registers on CLK0, not {regs!r}")
        m = Module()
        a, b, p = Signal(signed(18)), Signal(signed(18)), Signal(signed(36))
        m.d.sync += [
            a.eq(Cat(self._pin(f"i_A{k}") for k in range(18))),
            b.eq(Cat(self._pin(f"i_B{k}") for k in range(18))),
            p.eq(a * b),
        ]
        m.d.comb += [kw[f"o_P{k}"].eq(p[k]) for k in range(36)]
        return m
