"""The attention units' RAM (:class:`Ram`: three-stage reads, registered writes, block or distributed RAM,
and its cost, :func:`ram_cost`), the read-add-write accumulation on it (:class:`Accumulate`), its output
sweep (:class:`Sweep`) and the write port's multiplexer (:func:`write_port`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..cost import Memory as MemoryCost
from ..ecp5 import block_ram, bram_tiling
from .pipeline import register

__all__ = ["READ_LATENCY", "Ram", "ram_style", "ram_cost", "Accumulate", "Sweep", "write_port"]

READ_LATENCY = 3             # cycles from a RAM's read address to its data (see Ram)

LUT4_PER_BRAM = 400          # the LFE5U-85F's ratio (83,640 LUT4 / 208 DP16KD): what a block RAM is worth
LUT4_PER_DPR16X4 = 10        # a 16 x 4 distributed RAM with its write decoding and read multiplexers


def ram_style(width: int, depth: int) -> str:
    """``"block"`` or ``"distributed"``, whichever costs less, a block RAM counted at the device's ratio."""
    _, cols, rows = bram_tiling(width, depth)
    lutram = -(-width // 4) * -(-depth // 16) * LUT4_PER_DPR16X4
    return "block" if cols * rows * LUT4_PER_BRAM < lutram else "distributed"


def ram_cost(name: str, shape, depth: int, *, write_latency: int = 1) -> MemoryCost:
    """The memory of a :class:`Ram` of these arguments on an ECP5: DP16KD tiles or distributed RAM
    (:func:`ram_style`), its write port registered if ``write_latency``."""
    width = Shape.cast(shape).width
    rule = "primitive" if ram_style(width, depth) == "block" else "distributed"
    return MemoryCost(name, width, depth, rule, write_register=bool(write_latency))


class Ram(wiring.Component):
    """Simple dual-port RAM: one write port, one read port with three register stages.

    ``rd_addr`` presented with ``rd_en`` in cycle ``t`` gives ``rd_data`` in cycle ``t + 3``
    (``READ_LATENCY``); the three read stages advance only with ``rd_en``, so a stalled reader keeps its
    data. The write port goes through ``write_latency`` registers (0 or 1) before the memory, so that a
    memory spread over many distributed RAMs is written from flip-flops, not from the writers'
    multiplexers. A read presented in cycle ``t`` returns the writes presented up to cycle
    ``t - 1 - write_latency``; what it returns for a write to its address presented in cycle
    ``t - write_latency`` is unspecified: the cores never depend on it.

    The first two stages are :func:`hdl.ecp5.block_ram` (``ecp5``: DP16KD tiles with the output register
    on, their row multiplexer after it; else an Amaranth memory and a register), the third a fabric
    register. With ``ecp5``, a memory that costs fewer LUT4 as distributed RAM than its blocks are worth
    (:func:`ram_style`) is distributed RAM with a registered address (its fan-out to every
    TRELLIS_DPR16X4 is the long net), then two data registers.

    Parameters
    ----------
    shape : shape-castable
        Shape of a word.
    depth : int
        Words.
    ecp5 : bool or "model"
        Resolved ``ecp5`` setting (:func:`hdl.ecp5.use_ecp5`).
    write_latency : int
        Registers on the write port (0 or 1).
    """

    def __init__(self, shape, depth: int, ecp5, *, write_latency: int = 1):
        if write_latency not in (0, 1):
            raise ValueError(f"write_latency must be 0 or 1, not {write_latency!r}")
        self._depth, self._ecp5 = depth, ecp5
        self.write_latency = write_latency
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "wr_addr": In(abits), "wr_data": In(shape), "wr_en": In(1),
            "rd_addr": In(abits), "rd_en": In(1, init=1), "rd_data": Out(shape),
        })

    def elaborate(self, platform):
        m = Module()
        width = len(Value.cast(self.wr_data))
        stage3 = Signal(width, reset_less=True)
        m.d.comb += self.rd_data.eq(stage3)
        write = (self.wr_addr, self.wr_data, self.wr_en)
        if self.write_latency:
            write = (Signal.like(self.wr_addr, name="wr_addr_q", reset_less=True),
                     Signal(width, name="wr_data_q", reset_less=True), Signal(name="wr_en_q"))
            m.d.sync += [write[0].eq(self.wr_addr), write[1].eq(self.wr_data), write[2].eq(self.wr_en)]
        if not self._ecp5 or ram_style(width, self._depth) == "block":
            stage2 = block_ram(m, "mem", width=width, depth=self._depth, read_addr=self.rd_addr,
                               write=write, read_en=self.rd_en, ecp5=self._ecp5)
            with m.If(self.rd_en):
                m.d.sync += stage3.eq(stage2)
            return m
        # Stage 1 is the address register. The asynchronous read is captured (``held``) the cycle after
        # the address, so that a stalled read keeps its data while the word is rewritten.
        m.submodules.mem = mem = Memory(shape=unsigned(width), depth=self._depth, init=[],
                                        attrs={"ram_style": "distributed"})
        rd = mem.read_port(domain="comb")
        addr_q = Signal.like(self.rd_addr, reset_less=True)
        en_q = Signal()
        held = Signal(width, reset_less=True)
        stage2 = Signal(width, reset_less=True)
        m.d.comb += rd.addr.eq(addr_q)
        m.d.sync += en_q.eq(self.rd_en)
        with m.If(self.rd_en):
            m.d.sync += addr_q.eq(self.rd_addr)
        with m.If(en_q):
            m.d.sync += held.eq(rd.data)
        wr = mem.write_port()
        m.d.comb += [wr.addr.eq(write[0]), wr.data.eq(write[1]), wr.en.eq(write[2])]
        with m.If(self.rd_en):
            m.d.sync += [stage2.eq(Mux(en_q, rd.data, held)), stage3.eq(stage2)]
        return m


class Accumulate:
    """Read-add-write of multi-lane words in a :class:`Ram`, one update per cycle, hazards forwarded.

    The caller gives, in stage A, ``valid`` and ``addr`` (and drives the RAM's read address with ``addr``),
    and, ``READ_LATENCY`` (L) cycles later in stage C, the increment ``inc`` (a register). Stage C forms
    ``sum = old + inc``; stage D writes it (``wr_en``, ``wr_addr``, ``wr_data``). The read of an update in
    stage A cannot see the writes of the ``L + 1 + W`` updates ahead of it (``W``: the RAM's
    ``write_latency``), so ``old`` is the newest of their sums for the same address, else the read data.
    The addresses are compared two cycles before C; the update just ahead (``m1``: its sum is being formed)
    is kept apart, the older ones' sums are merged a cycle before C into one registered candidate
    (``fwd_hit``, ``fwd_val``). Stage C is then a three-way multiplexer with registered selects, and an adder.
    """

    def __init__(self, m: Module, name: str, valid, addr, inc, ram: Ram, layout: data.ArrayLayout):
        L, W = READ_LATENCY, ram.write_latency
        rd_data = ram.rd_data

        def reg(shape, suffix, reset=False):
            return Signal(shape, name=f"{name}_{suffix}", reset_less=not reset)

        sv, sa = [valid], [addr]                       # stages A (0) .. C (L)
        for k in range(1, L + 1):
            sv.append(register(m, sv[-1], f"{name}_s{k}_valid", reset=True))
            sa.append(register(m, sa[-1], f"{name}_s{k}_addr"))
        hist = [(reg(1, "d_valid", True), reg(len(addr), "d_addr"), reg(layout, "d_sum"))]
        for k in range(1, L + W):
            hv, ha, hs = reg(1, f"e{k}_valid", True), reg(len(addr), f"e{k}_addr"), reg(layout, f"e{k}_sum")
            m.d.sync += [hv.eq(hist[-1][0]), ha.eq(hist[-1][1]), hs.eq(hist[-1][2])]
            hist.append((hv, ha, hs))
        d_valid, d_addr, d_sum = hist[0]

        # Two cycles before C, the update in stage L - 2 is compared with the L + 1 + W ahead of it (flags
        # registered); one cycle before C, the older ones' sums are merged into one candidate, so that no
        # comparison drives the wide multiplexers directly.
        x_addr = sa[L - 2]
        ahead = [(sv[L - 1], sa[L - 1]), (sv[L], sa[L])] + [(hv, ha) for hv, ha, _ in hist[:L - 1 + W]]
        flags = reg(L + 1 + W, "flags")
        m.d.sync += flags.eq(Cat(*(v & (a == x_addr) for v, a in ahead)))
        m1, fwd_hit, fwd_val = reg(1, "m1"), reg(1, "fwd_hit"), reg(layout, "fwd_val")
        m.d.sync += [m1.eq(flags[0]), fwd_hit.eq(flags[1:].any())]
        for k in reversed(range(1, L + 1 + W)):        # the newest match is assigned last and wins
            with m.If(flags[k]):
                m.d.sync += fwd_val.eq(hist[k - 1][2])

        # C: add; D: write.
        old = reg(layout, "old")
        with m.If(m1):
            m.d.comb += old.eq(d_sum)
        with m.Elif(fwd_hit):
            m.d.comb += old.eq(fwd_val)
        with m.Else():
            m.d.comb += old.eq(rd_data)
        m.d.sync += [d_valid.eq(sv[L]), d_addr.eq(sa[L])]
        m.d.sync += [d_sum[j].eq(old[j] + inc[j]) for j in range(layout.length)]
        self.wr_en, self.wr_addr, self.wr_data = d_valid, d_addr, d_sum
        # Not busy: the last write was presented a cycle ago at the latest, so a read presented in the next
        # cycle sees it even through the RAM's write register.
        self.busy = Signal(name=f"{name}_busy")
        m.d.comb += self.busy.eq(Cat(*sv[1:], d_valid).any())


class Sweep:
    """The output sweep over the words of a :class:`Ram`: one word per cycle, with backpressure.

    ``start`` (comb, from the caller) begins a sweep. While ``active``, the caller drives the current
    word's RAM address ``word_addr``, its metadata ``word_meta`` (with its ``last`` flag) and
    ``word_last`` (the sweep's final word); ``step`` (comb) says the word is issued this cycle and the
    caller moves to the next. The metadata travels with the RAM's read stages, all advancing together
    when the output register is free or taken (``advance``), and leaves as ``valid`` / ``meta`` with the
    RAM's ``rd_data``. ``issued`` / ``issued_addr`` (registered) name each word the cycle after its read
    was issued: the caller zeroes it then, clear of the read. ``done`` (comb): every word has left; it
    holds until the caller's ``stop`` (comb) gives the RAM's read port back.

    The sweep drives the RAM's whole read port: ``word_addr`` while ``active``, else ``idle_addr`` (the
    caller's read address, its accumulator's) with the read always enabled, each a multiplexer on
    ``active`` written as one expression (see ``hdl.attention``'s docstring: ``active`` and ``advance`` keep
    their initial values until the first sweep).
    """

    def __init__(self, m: Module, name: str, ram: Ram, out_ready, meta_layout, idle_addr):
        L = READ_LATENCY
        self.start = Signal(name=f"{name}_start")
        self.stop = Signal(name=f"{name}_stop")
        self.word_addr = Signal.like(ram.rd_addr, name=f"{name}_word_addr")
        self.word_meta = Signal(meta_layout, name=f"{name}_word_meta")
        self.word_last = Signal(name=f"{name}_word_last")
        self.step = Signal(name=f"{name}_step")
        self.advance = Signal(name=f"{name}_advance")
        self.active = Signal(name=f"{name}_active")
        self.issued = Signal(name=f"{name}_issued")
        self.issued_addr = Signal.like(ram.rd_addr, name=f"{name}_issued_addr", reset_less=True)
        self.done = Signal(name=f"{name}_done")
        pending = Signal(name=f"{name}_pending")
        sv = [Signal(name=f"{name}_p{k}_valid") for k in range(L)]
        smeta = [Signal(meta_layout, name=f"{name}_p{k}_meta", reset_less=True) for k in range(L)]
        self.valid, self.meta = sv[-1], smeta[-1]
        m.d.comb += self.advance.eq(~sv[-1] | out_ready)
        # The RAM's read port, selected by a register alone.
        m.d.comb += [ram.rd_addr.eq(Mux(self.active, self.word_addr, idle_addr)),
                     ram.rd_en.eq(~self.active | self.advance)]
        m.d.sync += self.issued.eq(0)
        with m.If(self.start):                         # only ever while inactive
            m.d.sync += [self.active.eq(1), pending.eq(1)]
        with m.If(self.active):
            with m.If(self.advance):
                m.d.sync += [sv[0].eq(pending), smeta[0].eq(self.word_meta)]
                m.d.sync += [sv[k].eq(sv[k - 1]) for k in range(1, L)]
                m.d.sync += [smeta[k].eq(smeta[k - 1]) for k in range(1, L)]
                with m.If(pending):
                    m.d.comb += self.step.eq(1)
                    m.d.sync += [self.issued.eq(1), self.issued_addr.eq(self.word_addr)]
                    with m.If(self.word_last):
                        m.d.sync += pending.eq(0)
            with m.If(self.stop):
                m.d.sync += self.active.eq(0)
        m.d.comb += self.done.eq(self.active & ~pending & ~Cat(*sv).any() & ~self.issued)


def write_port(m: Module, ram: Ram, writes) -> None:
    """Drive ``ram``'s write port from ``writes``, ``(enable, addr, data)`` each: the first enabled one wins
    (the last is the default, written when its own enable is set).

    One expression per port signal, the multiplexers that assignments under ``If`` would give (see
    ``hdl.attention``'s docstring)."""
    en, addr, data_ = writes[-1]
    for w_en, w_addr, w_data in reversed(writes[:-1]):
        en, addr, data_ = w_en | en, Mux(w_en, w_addr, addr), Mux(w_en, w_data, data_)
    m.d.comb += [ram.wr_en.eq(en), ram.wr_addr.eq(addr), ram.wr_data.eq(data_)]


