"""Spike-driven self-attention datapaths for one time step: ``linear`` (QSD / SDT-V2) and ``sdsa1`` (SDT-V1).

The controller calls a unit once per time step. Every unit is event-driven: it consumes spike events
(:mod:`hdl.events`: ``addr = n * C + c``, a level, ``last`` on the frame's final event; level-0 events are
no-ops) at one event per cycle, so the work of a step grows with the number of spikes, plus one cycle per
output word. The exact arithmetic is ``docs/semantics.md`` (Attention); ``compiler.ir.golden`` is the
reference the tests compare with bit for bit.

Cores
-----
:class:`LinearAttentionUnit`
    ``KV[h, i, j] = sum_n K[n, hd+i] V[n, hd+j]`` and ``A[n, hd+j] = sum_i Q[n, hd+i] KV[h, i, j]``:
    V's events build V's map in memory (one word of ``d`` levels per token and head), K's events add
    ``level * V[n, head]`` (``d`` lanes) into a row of KV, Q's events add ``level * KV[h, i, :]`` into
    the ``d``-lane accumulator of ``A[n, h]``; then ``A`` streams out, one word per (token, head).
:class:`CoSpikeUnit`
    ``C[c] = sum_n K[n, c] V[n, c]``: V's events build V's map (one level per address), K's events add
    ``level_k * V[addr]`` into the count of channel ``c``; then the counts stream out.
:class:`MaskUnit`
    ``Y[n, c] = Q[n, c] M[c]``: a binary mask (one frame of mask events) filters Q's events.

Shared structure
----------------
* Every accumulation is a read-add-write on a RAM, one update per cycle: read (three register stages:
  the block RAM's own two and one in the fabric), add, write. Back-to-back updates of one address
  (frequent: the spikes of one token all add into one word of ``A``) take the sums still in flight
  (forwarding), so the pipeline never stalls and never depends on what a RAM returns when one address is
  read and written in the same cycle.
* ``addr -> (token, channel)`` is a slice when ``C`` is a power of two, else a pipelined restoring
  division by the constant (two quotient bits per stage); likewise ``channel -> (head, lane)``.
  Word addresses pad the head index to a power of two (``token << ceil(log2(heads)) | head``): no
  multiplier anywhere. Level times value products are shift-and-add (a mux when ``D`` is a power of
  two), so no MULT18X18D is used.
* Memories are left clean for the next time step during the output sweep, whose length is the dense
  output itself; no step clears a spike map with a pass over every address.
* With ``ecp5`` (the choice shared by every core, :mod:`hdl.ecp5`) the RAMs are DP16KD block RAMs with
  their output registers on (:func:`hdl.ecp5.block_ram`; a block RAM's clock-to-output without it,
  5.8 ns at speed 6 in nextpnr's model, leaves too little of a 150 MHz cycle) or distributed RAM,
  whichever is cheaper; with ``ecp5=False`` they are Amaranth memories with the same three-cycle read, so
  the Amaranth simulator runs the very pipeline that is synthesized (``ecp5="model"`` runs the ECP5
  structure, with behavioural models of the block RAM).
* Every combinational control signal (a port's ``ready``, a RAM port's address, enable and data, a sweep's
  start and stop) is one expression, not an assignment in an FSM state or under an ``If``. The logic is
  the same, but Yosys writes the latter as an ``always @*`` block, which Icarus (``-g2012``, as cocotb runs
  it) first runs when one of its inputs changes: a signal whose inputs keep their initial values is X until
  then. A's read enable, for one, would be X until the first output sweep: its read stages would hold X
  and the first step accumulate X (``tests/test_icarus_attention.py``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .ecp5 import block_ram, bram_tiling, check_ecp5, use_ecp5
from .events import event_layout, event_stream

__all__ = ["LinearAttentionUnit", "CoSpikeUnit", "MaskUnit"]

_KIND_V, _KIND_K, _KIND_Q = 0, 1, 2
_DIV_STEPS_PER_STAGE = 2      # quotient bits resolved per pipeline stage of a constant division
_READ_LATENCY = 3             # cycles from a RAM's read address to its data (see _Ram)


# -- argument checking ----------------------------------------------------------------------------------

def _check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value!r}")
    return value


def _bits(value: int) -> int:
    """Width of an unsigned register holding ``0..value`` (at least 1)."""
    return max(1, int(value).bit_length())


def _widths(tokens, channels, levels, level_width, addr_width):
    """Check the arguments common to every unit; return ``(level_width, addr_width)``."""
    _check_int("tokens", tokens)
    _check_int("channels", channels)
    _check_int("levels", levels, 1, 255)
    need_lw = _bits(levels)
    if level_width is None:
        level_width = need_lw
    _check_int("level_width", level_width, need_lw, 16)
    need_aw = _bits(tokens * channels - 1)
    if addr_width is None:
        addr_width = need_aw
    _check_int("addr_width", addr_width, need_aw, 32)
    return level_width, addr_width


# -- pipeline building blocks ---------------------------------------------------------------------------

def _register(m: Module, value, name: str, en=None, *, reset: bool = False):
    """A register (a view for a layout-shaped value) loaded with ``value`` every cycle, or when ``en``.

    Datapath registers have no reset (``reset=True`` for valid bits): the ECP5 packs them with no LUT."""
    reg = Signal(value.shape(), name=name, reset_less=not reset)
    if en is None:
        m.d.sync += reg.eq(value)
    else:
        with m.If(en):
            m.d.sync += reg.eq(value)
    return reg


def _delays(m: Module, value, count: int, name: str, *, reset: bool = False) -> list:
    """``[value, value delayed 1 cycle, ..., delayed count cycles]``."""
    out = [value]
    for k in range(count):
        out.append(_register(m, out[-1], f"{name}_d{k + 1}", reset=reset))
    return out


def _divmod(m: Module, x, divisor: int, quotient_bits: int, carry: list, *, name: str, en=None):
    """``x // divisor`` and ``x % divisor`` for a constant divisor, with ``x < divisor << quotient_bits``.

    A power of two is a slice (no latency). Otherwise a restoring division resolves
    ``_DIV_STEPS_PER_STAGE`` quotient bits per registered stage; ``carry`` (a list of values) is delayed
    alongside (``carry[0]``, a valid bit, with a reset). Returns ``(quotient, remainder, carried)``; both
    results are at least 1 bit wide.
    """
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        quotient = x[shift:shift + quotient_bits] if quotient_bits else Const(0, 1)
        remainder = x[:shift] if shift else Const(0, 1)
        return quotient, remainder, list(carry)
    rem = x[:_bits((divisor << quotient_bits) - 1)]
    qbits: list = []                                   # most significant first
    carry = list(carry)
    stages = pending = 0
    for k in reversed(range(quotient_bits)):
        step = divisor << k
        ge = Signal(name=f"{name}_ge{k}")
        nrem = Signal(range(step), name=f"{name}_rem{k}")
        m.d.comb += [ge.eq(rem >= step), nrem.eq(Mux(ge, rem - step, rem))]
        rem, pending = nrem, pending + 1
        qbits.append(ge)
        if pending == _DIV_STEPS_PER_STAGE or k == 0:
            rem = _register(m, rem, f"{name}_s{stages}_rem", en)
            qreg = _register(m, Cat(*qbits), f"{name}_s{stages}_q", en)
            qbits = [qreg[i] for i in range(len(qbits))]
            carry = [_register(m, c, f"{name}_s{stages}_c{i}", en, reset=i == 0) for i, c in enumerate(carry)]
            stages, pending = stages + 1, 0
    quotient = Cat(*reversed(qbits)) if qbits else Const(0, 1)
    return quotient, rem[:_bits(divisor - 1)], carry


def _division_stages(*divisions) -> int:
    """Pipeline stages of :func:`_divmod` for ``(quotient_bits, divisor)`` pairs."""
    return sum(-(-q // _DIV_STEPS_PER_STAGE) for q, div in divisions if div & (div - 1))


def _times_level(level, value, levels: int):
    """``level * value`` for ``0 <= level <= levels`` by shift-and-add (no multiplier).

    When ``levels = 2**p`` the top level bit excludes every other, so the top term is a mux, not an adder.
    """
    width = _bits(levels)
    level = level[:width]
    if levels & (levels - 1) == 0 and width > 1:
        low = sum((Mux(level[b], value << b, 0) for b in range(width - 1)), Const(0, 1))
        return Mux(level[width - 1], value << (width - 1), low)
    return sum((Mux(level[b], value << b, 0) for b in range(width)), Const(0, 1))


# -- RAM ------------------------------------------------------------------------------------------------

_LUT4_PER_BRAM = 400          # the LFE5U-85F's ratio (83,640 LUT4 / 208 DP16KD): what a block RAM is worth
_LUT4_PER_DPR16X4 = 10        # a 16 x 4 distributed RAM with its write decoding and read multiplexers


def _ram_style(width: int, depth: int) -> str:
    """``"block"`` or ``"distributed"``, whichever costs less, a block RAM counted at the device's ratio."""
    _, cols, rows = bram_tiling(width, depth)
    lutram = -(-width // 4) * -(-depth // 16) * _LUT4_PER_DPR16X4
    return "block" if cols * rows * _LUT4_PER_BRAM < lutram else "distributed"


class _Ram(wiring.Component):
    """Simple dual-port RAM: one write port, one read port with three register stages.

    ``rd_addr`` presented with ``rd_en`` in cycle ``t`` gives ``rd_data`` in cycle ``t + 3``
    (``_READ_LATENCY``); the three read stages advance only with ``rd_en``, so a stalled reader keeps its
    data. The write port goes through ``write_latency`` registers (0 or 1) before the memory, so that a
    memory spread over many distributed RAMs is written from flip-flops, not from the writers'
    multiplexers. A read presented in cycle ``t`` returns the writes presented up to cycle
    ``t - 1 - write_latency``; what it returns for a write to its address presented in cycle
    ``t - write_latency`` is unspecified: the cores never depend on it.

    The first two stages are :func:`hdl.ecp5.block_ram` (``ecp5``: DP16KD tiles with the output register
    on, their row multiplexer after it; else an Amaranth memory and a register), the third a fabric
    register. With ``ecp5``, a memory that costs fewer LUT4 as distributed RAM than its blocks are worth
    (:func:`_ram_style`) is distributed RAM with a registered address (its fan-out to every
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
        if not self._ecp5 or _ram_style(width, self._depth) == "block":
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


class _Accumulate:
    """Read-add-write of multi-lane words in a :class:`_Ram`, one update per cycle, hazards forwarded.

    The caller gives, in stage A, ``valid`` and ``addr`` (and drives the RAM's read address with ``addr``),
    and, ``_READ_LATENCY`` (L) cycles later in stage C, the increment ``inc`` (a register). Stage C forms
    ``sum = old + inc``; stage D writes it (``wr_en``, ``wr_addr``, ``wr_data``). The read of an update in
    stage A cannot see the writes of the ``L + 1 + W`` updates ahead of it (``W``: the RAM's
    ``write_latency``), so ``old`` is the newest of their sums for the same address, else the read data.
    The addresses are compared two cycles before C; the update just ahead (``m1``: its sum is being formed)
    is kept apart, the older ones' sums are merged a cycle before C into one registered candidate
    (``fwd_hit``, ``fwd_val``). Stage C is then a three-way multiplexer with registered selects, and an adder.
    """

    def __init__(self, m: Module, name: str, valid, addr, inc, ram: _Ram, layout: data.ArrayLayout):
        L, W = _READ_LATENCY, ram.write_latency
        rd_data = ram.rd_data

        def reg(shape, suffix, reset=False):
            return Signal(shape, name=f"{name}_{suffix}", reset_less=not reset)

        sv, sa = [valid], [addr]                       # stages A (0) .. C (L)
        for k in range(1, L + 1):
            sv.append(_register(m, sv[-1], f"{name}_s{k}_valid", reset=True))
            sa.append(_register(m, sa[-1], f"{name}_s{k}_addr"))
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


class _Sweep:
    """The output sweep over the words of a :class:`_Ram`: one word per cycle, with backpressure.

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
    ``active`` written as one expression (see the module's docstring: ``active`` and ``advance`` keep
    their initial values until the first sweep).
    """

    def __init__(self, m: Module, name: str, ram: _Ram, out_ready, meta_layout, idle_addr):
        L = _READ_LATENCY
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


def _frame_inputs(m: Module, sel: dict, phases) -> None:
    """Take each input port's events in its phase into the shared pipeline entry ``sel``.

    ``phases`` holds ``(active, port, kind)`` per port, ``active`` the FSM's decode of the port's phase (one
    at most at a time): ``port.ready`` is ``active``. Each signal is one expression (see the module's
    docstring): as assignments in the FSM's states, ``ready`` would be X until the state first changed,
    and with it the producer's handshake and the accelerator's event counters."""
    payloads, kinds = [], []
    for active, port, kind in phases:
        m.d.comb += port.ready.eq(active)
        payloads.append(Mux(active, port.payload.as_value(), 0))
        kinds.append(Mux(active, kind, 0))
    m.d.comb += [
        sel["valid"].eq(Cat(*(active & port.valid for active, port, _ in phases)).any()),
        sel["payload"].eq(_any_of(payloads)),
        sel["kind"].eq(_any_of(kinds)),
    ]


def _any_of(values):
    """The OR of ``values`` (at most one of them non-zero: a one-hot multiplexer)."""
    out = values[0]
    for value in values[1:]:
        out = out | value
    return out


def _write_port(m: Module, ram: _Ram, writes) -> None:
    """Drive ``ram``'s write port from ``writes``, ``(enable, addr, data)`` each: the first enabled one wins
    (the last is the default, written when its own enable is set).

    One expression per port signal, the multiplexers that assignments under ``If`` would give (see the
    module's docstring)."""
    en, addr, data_ = writes[-1]
    for w_en, w_addr, w_data in reversed(writes[:-1]):
        en, addr, data_ = w_en | en, Mux(w_en, w_addr, addr), Mux(w_en, w_data, data_)
    m.d.comb += [ram.wr_en.eq(en), ram.wr_addr.eq(addr), ram.wr_data.eq(data_)]


def _entry(m: Module, addr_width: int, level_width: int):
    """The shared input stage ``s0``: the accepted event of the current phase, registered.

    Returns ``(sel, s0)``: ``sel`` is driven from the FSM's phase (:func:`_frame_inputs`); ``s0["valid"]``
    is set for an accepted event with a non-zero level (level-0 events are no-ops and go no further)."""
    sel = {"valid": Signal(), "payload": Signal(event_layout(addr_width, level_width)), "kind": Signal(2)}
    s0 = {"valid": Signal(name="s0_valid"), "addr": Signal(addr_width, name="s0_addr", reset_less=True),
          "level": Signal(level_width, name="s0_level", reset_less=True),
          "kind": Signal(2, name="s0_kind", reset_less=True)}
    m.d.sync += [
        s0["valid"].eq(sel["valid"] & (sel["payload"].level != 0)),
        s0["addr"].eq(sel["payload"].addr),
        s0["level"].eq(sel["payload"].level),
        s0["kind"].eq(sel["kind"]),
    ]
    return sel, s0


# -- linear attention -----------------------------------------------------------------------------------

class LinearAttentionUnit(wiring.Component):
    """Linear spike-driven self-attention (QSD / SDT-V2) for one time step, event-driven.

    Per head ``h`` with ``d = channels / heads``::

        KV[h, i, j] = sum_n K[n, hd+i] * V[n, hd+j]        A[n, hd+j] = sum_i Q[n, hd+i] * KV[h, i, j]

    A step is three input frames, taken strictly in the order V, K, Q (each port's ``ready`` is raised
    only in its phase), then the output of ``A``:

    1. **V** (one cycle per event): event ``(n, hd+j, level)`` puts ``level`` into lane ``j`` of V's map
       word ``(n, h)`` (``d`` lanes of ``bits(D)`` bits).
    2. **K** (one cycle per event): event ``(n, hd+i, lk)`` reads V's word ``(n, h)`` and adds
       ``lk * V[n, hd:hd+d]`` into row ``(h, i)`` of KV (``d`` lanes).
    3. **Q** (one cycle per event): event ``(n, hd+i, lq)`` reads KV's row ``(h, i)`` and adds
       ``lq * KV[h, i, :]`` into A's word ``(n, h)`` (``d`` lanes).
    4. **Output**: one word per (token, head), tokens outer, heads inner, ``last`` on the final word. Each
       word of A is zeroed as it is read out; V's map and KV are zeroed by a counter running alongside,
       so the next step starts clean. After a reset, the same counter zeroes all three memories
       (``max(tokens << ceil(log2(heads)), channels)`` cycles) before V's first frame is accepted.

    Cycles per step (:meth:`step_cycles`), back to back with no stalls, ``e_V``, ``e_K``, ``e_Q`` the
    events of each frame (spikes plus no-op events; at least one, the one carrying ``last``)::

        e_V + e_K + e_Q + 3 * depth + max(tokens * heads + 3, tokens << ceil(log2(heads)), channels) + 3

    Each frame is followed by a drain of the pipeline (``depth`` cycles after its last spike; a frame
    that ends with no-op events drains sooner). The output sweep is the dense output itself, one word
    per cycle; zeroing V's map and KV runs alongside it.

    Parameters
    ----------
    tokens : int
        ``N``, tokens per time step.
    channels : int
        ``C``, channels of Q, K, V and of the output.
    heads : int
        Number of heads; must divide ``channels``.
    levels : int
        ``D``, the largest spike level of Q, K and V (1, 2 or 4 in the compiler's models).
    level_width : int, optional
        Width of the events' ``level`` field (default ``bits(D)``).
    addr_width : int, optional
        Width of the events' ``addr`` field (default ``bits(N * C - 1)``).
    ecp5 : bool or "model", optional
        RAMs from ECP5 block RAM primitives with output registers, or distributed RAM, whichever is
        cheaper per memory (needed for 150 MHz); the choice shared by every core (:mod:`hdl.ecp5`):
        None (default) follows the platform (``platform.family == "ecp5"``), True forces the
        primitives (``bench.synth``), ``"model"`` simulates them with behavioural models, False uses
        Amaranth memories (simulation, any FPGA).

    Members
    -------
    v, k, q : ``In(event_stream(addr_width, level_width))``
        V's, K's and Q's spike events for this step, one frame each.
    o : ``Out(stream.Signature(out_layout))``
        ``{"token", "head", "values", "last"}``; ``values`` is ``ArrayLayout(unsigned(acc_width), d)``,
        ``values[j] = A[token, head * d + j]``.

    Attributes
    ----------
    acc_width : int
        ``bits(d * D * N * D * D)``: the range ``ir.infer_types`` gives the ``LinearAttention`` output.
    kv_width : int
        ``bits(N * D * D)``, the width of a KV entry.
    depth : int
        Cycles from an accepted event to the write of its last update (K and Q events).
    """

    def __init__(self, tokens: int, channels: int, heads: int, levels: int, *,
                 level_width: int | None = None, addr_width: int | None = None, ecp5=None):
        level_width, addr_width = _widths(tokens, channels, levels, level_width, addr_width)
        _check_int("heads", heads)
        if channels % heads:
            raise ValueError(f"heads must divide channels ({channels}), not {heads!r}")
        self._tokens, self._channels, self._heads, self._levels = tokens, channels, heads, levels
        self._d = channels // heads
        self._ecp5 = check_ecp5(ecp5)
        self.level_width, self.addr_width = level_width, addr_width
        self.kv_width = _bits(tokens * levels * levels)
        self.acc_width = _bits(self._d * levels * tokens * levels * levels)
        self.depth = 4 + _READ_LATENCY + _division_stages(((tokens - 1).bit_length(), channels),
                                                          ((heads - 1).bit_length(), self._d))
        self.out_layout = data.StructLayout({
            "token": range(tokens),
            "head": range(heads),
            "values": data.ArrayLayout(unsigned(self.acc_width), self._d),
            "last": 1,
        })
        events = event_stream(addr_width, level_width)
        super().__init__({
            "v": In(events),
            "k": In(events),
            "q": In(events),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def step_cycles(self, e_v: int, e_k: int, e_q: int) -> int:
        """Cycles per step with these events per frame, no stalls, each frame ending with a spike."""
        words = self._tokens << (self._heads - 1).bit_length()
        return (e_v + e_k + e_q + 3 * self.depth
                + max(self._tokens * self._heads + 3, words, self._channels) + 3)

    def elaborate(self, platform):
        m = Module()
        N, C, H, D, d = self._tokens, self._channels, self._heads, self._levels, self._d
        L = _READ_LATENCY
        ecp5 = use_ecp5(self._ecp5, platform)
        hb = (H - 1).bit_length()                      # head bits of a padded word address
        nq = (N - 1).bit_length()
        words = N << hb
        v_layout = data.ArrayLayout(unsigned(_bits(D)), d)
        kv_layout = data.ArrayLayout(unsigned(self.kv_width), d)
        a_layout = data.ArrayLayout(unsigned(self.acc_width), d)
        m.submodules.v_ram = v_ram = _Ram(v_layout, words, ecp5)
        m.submodules.kv_ram = kv_ram = _Ram(kv_layout, C, ecp5)
        m.submodules.a_ram = a_ram = _Ram(a_layout, words, ecp5)

        sel, s0 = _entry(m, self.addr_width, self.level_width)
        # addr -> (token, channel) -> (head, lane)
        token, chan, (valid1, kind1, level1) = _divmod(
            m, s0["addr"], C, nq, [s0["valid"], s0["kind"], s0["level"]], name="div_c")
        head, lane, (valid2, kind2, level2, token2, chan2) = _divmod(
            m, chan, d, hb, [valid1, kind1, level1, token, chan], name="div_d")

        # F: V's events enter v_acc (stage A); K's and Q's read their source word (V's map, a KV row).
        f_valid = _register(m, valid2, "f_valid", reset=True)
        f_kind = _register(m, kind2, "f_kind")
        f_word = _register(m, Cat(head[:hb], token2[:max(1, nq)])[:len(v_ram.rd_addr)], "f_word")
        f_chan = _register(m, chan2[:len(kv_ram.rd_addr)], "f_chan")
        levels_ = _delays(m, _register(m, level2, "f_level"), L, "level")
        lanes_ = _delays(m, _register(m, lane, "f_lane"), L - 1, "lane")

        # V's map: a V event adds its level into one lane (a lane that was zero).
        v_inc = Signal(v_layout, name="v_inc", reset_less=True)
        m.d.sync += [v_inc[j].eq(Mux(lanes_[L - 1] == j, levels_[L - 1], 0)) for j in range(d)]
        v_acc = _Accumulate(m, "v_acc", f_valid & (f_kind == _KIND_V), f_word, v_inc, v_ram, v_layout)
        m.d.comb += v_ram.rd_addr.eq(f_word)

        # G: stage A of kv_acc (K's events) and a_acc (Q's events). Their increments, level x source,
        # are formed when the source arrives (F + L) and registered for stage C (G + L).
        g_valid = _register(m, f_valid, "g_valid", reset=True)
        g_kind = _register(m, f_kind, "g_kind")
        g_word, g_chan = _register(m, f_word, "g_word"), _register(m, f_chan, "g_chan")
        prod_k = Signal(kv_layout, name="prod_k", reset_less=True)
        prod_q = Signal(a_layout, name="prod_q", reset_less=True)
        m.d.sync += [prod_k[j].eq(_times_level(levels_[L], v_ram.rd_data[j], D)) for j in range(d)]
        m.d.sync += [prod_q[j].eq(_times_level(levels_[L], kv_ram.rd_data[j], D)) for j in range(d)]
        kv_acc = _Accumulate(m, "kv_acc", g_valid & (g_kind == _KIND_K), g_chan, prod_k, kv_ram, kv_layout)
        a_acc = _Accumulate(m, "a_acc", g_valid & (g_kind == _KIND_Q), g_word, prod_q, a_ram, a_layout)
        busy = Signal()
        m.d.comb += busy.eq(s0["valid"] | valid1 | valid2 | f_valid | g_valid
                            | v_acc.busy | kv_acc.busy | a_acc.busy)

        q_phase = Signal()                              # KV is read as Q's source, not by kv_acc (a register)
        m.d.comb += kv_ram.rd_addr.eq(Mux(q_phase, f_chan, g_chan))     # A's read port: the sweep's

        # Output sweep over A, tokens outer, heads inner.
        meta = data.StructLayout({"token": range(N), "head": range(H), "last": 1})
        sweep = _Sweep(m, "sweep", a_ram, self.o.ready, meta, idle_addr=g_word)
        sw_token, sw_head = Signal(range(N)), Signal(range(H))
        last_word = (sw_token == N - 1) & (sw_head == H - 1)
        m.d.comb += [
            sweep.word_addr.eq(Cat(sw_head[:hb], sw_token)),
            sweep.word_meta.token.eq(sw_token), sweep.word_meta.head.eq(sw_head),
            sweep.word_meta.last.eq(last_word), sweep.word_last.eq(last_word),
            self.o.valid.eq(sweep.valid),
            self.o.payload.token.eq(sweep.meta.token),
            self.o.payload.head.eq(sweep.meta.head),
            self.o.payload.values.eq(a_ram.rd_data),
            self.o.payload.last.eq(sweep.meta.last),
        ]
        with m.If(sweep.step):
            with m.If(sw_head == H - 1):
                m.d.sync += [sw_head.eq(0), sw_token.eq(Mux(last_word, 0, sw_token + 1))]
            with m.Else():
                m.d.sync += sw_head.eq(sw_head + 1)
        # V's map and KV are zeroed by a counter of their own during the sweep (registered write
        # selects). After a reset it zeroes A as well: a reset in the middle of a step leaves partial sums.
        clr_addr = Signal(range(max(words, C)))
        clr_v, clr_kv, clr_a = Signal(init=1), Signal(init=1), Signal(init=1)
        with m.If(sweep.start):
            m.d.sync += [clr_addr.eq(0), clr_v.eq(1), clr_kv.eq(1)]
        with m.Elif(clr_v | clr_kv | clr_a):
            m.d.sync += [clr_addr.eq(clr_addr + 1), clr_v.eq(clr_v & (clr_addr != words - 1)),
                         clr_kv.eq(clr_kv & (clr_addr != C - 1)), clr_a.eq(clr_a & (clr_addr != words - 1))]
        # RAM writes: the accumulators', unless a clear (or, for A, the sweep's zeroing) takes the port.
        _write_port(m, v_ram, [(clr_v, clr_addr, 0), (v_acc.wr_en, v_acc.wr_addr, v_acc.wr_data)])
        _write_port(m, kv_ram, [(clr_kv, clr_addr, 0), (kv_acc.wr_en, kv_acc.wr_addr, kv_acc.wr_data)])
        _write_port(m, a_ram, [(clr_a, clr_addr, 0), (sweep.issued, sweep.issued_addr, 0),
                               (a_acc.wr_en, a_acc.wr_addr, a_acc.wr_data)])

        # The FSM's combinational outputs are expressions of its state, after it (see _frame_inputs).
        with m.FSM(init="INIT") as fsm:
            with m.State("INIT"):
                with m.If(~clr_v & ~clr_kv & ~clr_a):
                    m.next = "V"
            with m.State("V"):
                with m.If(self.v.valid & self.v.payload.last):
                    m.next = "V_DRAIN"
            with m.State("V_DRAIN"):
                with m.If(~busy):
                    m.next = "K"
            with m.State("K"):
                with m.If(self.k.valid & self.k.payload.last):
                    m.next = "K_DRAIN"
            with m.State("K_DRAIN"):
                with m.If(~busy):
                    m.d.sync += q_phase.eq(1)
                    m.next = "Q"
            with m.State("Q"):
                with m.If(self.q.valid & self.q.payload.last):
                    m.next = "Q_DRAIN"
            with m.State("Q_DRAIN"):
                with m.If(sweep.start):
                    m.d.sync += q_phase.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(sweep.stop):
                    m.next = "V"
        _frame_inputs(m, sel, [(fsm.ongoing("V"), self.v, _KIND_V), (fsm.ongoing("K"), self.k, _KIND_K),
                               (fsm.ongoing("Q"), self.q, _KIND_Q)])
        m.d.comb += [sweep.start.eq(fsm.ongoing("Q_DRAIN") & ~busy),
                     sweep.stop.eq(fsm.ongoing("OUT") & sweep.done & ~clr_v & ~clr_kv)]
        return m


# -- sdsa1: co-spike counts -----------------------------------------------------------------------------

class CoSpikeUnit(wiring.Component):
    """SDT-V1 co-spike counts for one time step, event-driven: ``C[c] = sum_n K[n, c] * V[n, c]``.

    A step is two input frames, V then K (each port's ``ready`` is raised only in its phase), then the
    output of the counts:

    1. **V** (one cycle per event): event ``(addr, level)`` writes ``level`` at ``addr`` of V's map
       (one entry per address, ``N * C`` entries).
    2. **K** (one cycle per event): event ``(n * C + c, lk)`` reads V's map at the same address and adds
       ``lk * V[n, c]`` into the count of channel ``c``.
    3. **Output**: ``ceil(C / lanes)`` words of ``lanes`` counts, ``last`` on the final word; each word is
       zeroed as it is read out.

    V's map is never cleared with a pass over its ``N * C`` entries. Each entry carries the step's tag
    (a ``tag_width``-bit step counter) and reads as 0 unless its tag is the current step's; during each
    output sweep a scrubber zeroes the next ``ceil(C / lanes)`` entries (in turn, wrapping), so an entry
    is scrubbed within ``ceil(N * C / words)`` steps, fewer than the ``2 ** tag_width`` steps after which
    a stale tag would match again. After a reset the scrubber zeroes the whole map (``N * C`` cycles)
    and the counts before V's first frame is accepted.

    Cycles per step (:meth:`step_cycles`), back to back with no stalls, ``e_V`` and ``e_K`` the events of
    each frame (at least one each; K's frame ending with a spike)::

        e_V + e_K + depth + ceil(C / lanes) + 5

    Parameters
    ----------
    tokens, channels, levels : int
        ``N``, ``C`` and ``D``, the largest spike level of K and V.
    lanes : int
        Counts per output word (default 1: one word per channel).
    level_width, addr_width, ecp5
        As for :class:`LinearAttentionUnit`.

    Members
    -------
    v, k : ``In(event_stream(addr_width, level_width))``
        V's and K's spike events for this step, one frame each.
    o : ``Out(stream.Signature(out_layout))``
        ``{"group", "values", "last"}``: ``values[l] = C[group * lanes + l]`` (0 past ``C``), each
        ``unsigned(count_width)``.

    Attributes
    ----------
    count_width : int
        ``bits(N * D * D)``: the range ``ir.infer_types`` gives the ``CoSpike`` output.
    tag_width : int
        Bits of the step tag stored with each entry of V's map.
    depth : int
        Cycles from an accepted K event to the write of its count.
    """

    def __init__(self, tokens: int, channels: int, levels: int, *, lanes: int = 1,
                 level_width: int | None = None, addr_width: int | None = None, ecp5=None):
        level_width, addr_width = _widths(tokens, channels, levels, level_width, addr_width)
        _check_int("lanes", lanes, 1, channels)
        self._tokens, self._channels, self._levels, self._lanes = tokens, channels, levels, lanes
        self._ecp5 = check_ecp5(ecp5)
        self._words = -(-channels // lanes)
        self.level_width, self.addr_width = level_width, addr_width
        self.count_width = _bits(tokens * levels * levels)
        self.tag_width = _bits(-(-tokens * channels // self._words))
        self.depth = 4 + _READ_LATENCY + _division_stages(((tokens - 1).bit_length(), channels),
                                                          ((self._words - 1).bit_length(), lanes))
        self.out_layout = data.StructLayout({
            "group": range(self._words),
            "values": data.ArrayLayout(unsigned(self.count_width), lanes),
            "last": 1,
        })
        events = event_stream(addr_width, level_width)
        super().__init__({
            "v": In(events),
            "k": In(events),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def step_cycles(self, e_v: int, e_k: int) -> int:
        """Cycles per step with these events per frame, no stalls, K's frame ending with a spike."""
        return e_v + e_k + self.depth + self._words + 5

    def elaborate(self, platform):
        m = Module()
        N, C, D, P, G = self._tokens, self._channels, self._levels, self._lanes, self._words
        L = _READ_LATENCY
        ecp5 = use_ecp5(self._ecp5, platform)
        vw, tw = _bits(D), self.tag_width
        count_layout = data.ArrayLayout(unsigned(self.count_width), P)
        # V's map is written straight (K's first read can follow V's last write in the next cycle)
        m.submodules.v_ram = v_ram = _Ram(unsigned(vw + tw), N * C, ecp5, write_latency=0)
        m.submodules.c_ram = c_ram = _Ram(count_layout, G, ecp5)
        tag = Signal(tw)                                # the current step's tag

        sel, s0 = _entry(m, self.addr_width, self.level_width)
        _, chan, (valid1, kind1, level1, addr1) = _divmod(
            m, s0["addr"], C, (N - 1).bit_length(), [s0["valid"], s0["kind"], s0["level"], s0["addr"]],
            name="div_c")
        group, lane, (valid2, kind2, level2, addr2) = _divmod(
            m, chan, P, (G - 1).bit_length(), [valid1, kind1, level1, addr1], name="div_p")

        # F: a V event writes its entry; a K event reads the same address.
        f_valid = _register(m, valid2, "f_valid", reset=True)
        f_kind = _register(m, kind2, "f_kind")
        f_addr = _register(m, addr2[:len(v_ram.rd_addr)], "f_addr")
        f_group = _register(m, group[:len(c_ram.rd_addr)], "f_group")
        levels_ = _delays(m, _register(m, level2, "f_level"), L, "level")
        lanes_ = _delays(m, _register(m, lane, "f_lane"), L, "lane")
        m.d.comb += v_ram.rd_addr.eq(f_addr)
        # G: stage A of the count accumulator; the increment is formed when V's entry arrives (F + L).
        g_valid = _register(m, f_valid, "g_valid", reset=True)
        g_kind = _register(m, f_kind, "g_kind")
        g_group = _register(m, f_group, "g_group")
        entry_level, entry_tag = v_ram.rd_data[:vw], v_ram.rd_data[vw:]
        v_level = Mux(entry_tag == tag, entry_level, 0)
        prod = _times_level(levels_[L], v_level, D)
        inc = Signal(count_layout, name="inc", reset_less=True)
        m.d.sync += [inc[j].eq(Mux(lanes_[L] == j, prod, 0)) for j in range(P)]
        c_acc = _Accumulate(m, "c_acc", g_valid & (g_kind == _KIND_K), g_group, inc, c_ram, count_layout)
        busy = Signal()
        m.d.comb += busy.eq(s0["valid"] | valid1 | valid2 | f_valid | g_valid | c_acc.busy)

        # Output sweep over the counts; the scrubber zeroes G entries of V's map alongside.
        meta = data.StructLayout({"group": range(G), "last": 1})
        sweep = _Sweep(m, "sweep", c_ram, self.o.ready, meta, idle_addr=g_group)
        sw_group = Signal(range(G))
        last_word = sw_group == G - 1
        m.d.comb += [
            sweep.word_addr.eq(sw_group), sweep.word_meta.group.eq(sw_group),
            sweep.word_meta.last.eq(last_word), sweep.word_last.eq(last_word),
            self.o.valid.eq(sweep.valid),
            self.o.payload.group.eq(sweep.meta.group),
            self.o.payload.values.eq(c_ram.rd_data),
            self.o.payload.last.eq(sweep.meta.last),
        ]
        with m.If(sweep.step):
            m.d.sync += sw_group.eq(Mux(last_word, 0, sw_group + 1))
        # After a reset the scrubber zeroes all of V's map, and the count memory is zeroed alongside.
        scrub_addr = Signal(range(N * C))
        scrub_left = Signal(range(max(G, N * C) + 1), init=N * C)
        scrub = Signal()
        m.d.comb += scrub.eq(~sweep.start & (scrub_left != 0))
        with m.If(sweep.start):
            m.d.sync += scrub_left.eq(G)
        with m.Elif(scrub):
            m.d.sync += [scrub_left.eq(scrub_left - 1),
                         scrub_addr.eq(Mux(scrub_addr == N * C - 1, 0, scrub_addr + 1))]
        c_clear, c_clear_addr = Signal(init=1), Signal(range(G))
        with m.If(c_clear):
            m.d.sync += [c_clear_addr.eq(c_clear_addr + 1), c_clear.eq(c_clear_addr != G - 1)]
        # RAM writes: V's events and the counts' accumulator, unless the scrubber, the sweep's zeroing or
        # the clear after a reset takes the port.
        _write_port(m, v_ram, [(scrub, scrub_addr, 0),
                               (f_valid & (f_kind == _KIND_V), f_addr, Cat(levels_[0][:vw], tag))])
        _write_port(m, c_ram, [(c_clear, c_clear_addr, 0), (sweep.issued, sweep.issued_addr, 0),
                               (c_acc.wr_en, c_acc.wr_addr, c_acc.wr_data)])

        # The FSM's combinational outputs are expressions of its state, after it (see _frame_inputs).
        with m.FSM(init="INIT") as fsm:
            with m.State("INIT"):
                with m.If((scrub_left == 0) & ~c_clear):
                    m.next = "V"
            with m.State("V"):
                with m.If(self.v.valid & self.v.payload.last):
                    m.next = "K"                        # K's reads follow V's writes in one pipeline
            with m.State("K"):
                with m.If(self.k.valid & self.k.payload.last):
                    m.next = "K_DRAIN"
            with m.State("K_DRAIN"):
                with m.If(sweep.start):
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(sweep.stop):
                    m.d.sync += tag.eq(tag + 1)
                    m.next = "V"
        _frame_inputs(m, sel, [(fsm.ongoing("V"), self.v, _KIND_V), (fsm.ongoing("K"), self.k, _KIND_K)])
        m.d.comb += [sweep.start.eq(fsm.ongoing("K_DRAIN") & ~busy),
                     sweep.stop.eq(fsm.ongoing("OUT") & sweep.done & (scrub_left == 0))]
        return m


# -- sdsa1: mask ----------------------------------------------------------------------------------------

class MaskUnit(wiring.Component):
    """SDT-V1 masking for one time step: ``Y[n, c] = Q[n, c] * M[c]``, M binary, event-driven.

    A step is the mask's frame, then Q's frame (each port's ``ready`` is raised only in its phase):

    1. **Mask** (one cycle per event): event ``(c, level)`` with ``level != 0`` sets ``M[c]`` (the mask is
       the spike map ``[1, C]`` of a one-level neuron, so its ``addr`` is the channel).
    2. **Q** (one cycle per event, stalled only by ``o``): event ``(n * C + c, level)`` leaves on ``o``
       unchanged if ``M[c]`` is set; otherwise it is dropped, except Q's ``last`` event, which leaves as
       a level-0 no-op carrying ``last`` so the output frame is closed (:mod:`hdl.events`). Level-0
       events are dropped unless they carry ``last``. After Q's last event the mask is cleared (one
       cycle) for the next step.

    Cycles per step (:meth:`step_cycles`), back to back with no stalls: ``e_M + e_Q + depth - 2``, where
    ``depth`` (``3 + division stages``) is an event's latency from ``q`` to ``o``.

    Parameters
    ----------
    tokens, channels, levels : int
        ``N``, ``C`` and ``D``, the largest level of Q's spikes.
    level_width, addr_width : int, optional
        Widths of Q's (and the output's) event fields, as for :class:`LinearAttentionUnit`.
    mask_level_width : int
        Width of the mask events' ``level`` field (default 1).

    Members
    -------
    m : ``In(event_stream(bits(C - 1), mask_level_width))``
        The mask's spike events for this step, one frame.
    q : ``In(event_stream(addr_width, level_width))``
        Q's spike events for this step, one frame.
    o : ``Out(event_stream(addr_width, level_width))``
        ``Y``'s spike events, one frame.

    Attributes
    ----------
    depth : int
        Cycles from an accepted Q event to its appearance on ``o``.
    """

    _CHUNK = 16                 # the mask is looked up in two stages: a 16-bit chunk, then its bit

    def __init__(self, tokens: int, channels: int, levels: int, *, level_width: int | None = None,
                 addr_width: int | None = None, mask_level_width: int = 1):
        level_width, addr_width = _widths(tokens, channels, levels, level_width, addr_width)
        _check_int("mask_level_width", mask_level_width, 1, 16)
        self._tokens, self._channels = tokens, channels
        self.level_width, self.addr_width = level_width, addr_width
        self.depth = 3 + _division_stages(((tokens - 1).bit_length(), channels))
        events = event_stream(addr_width, level_width)
        super().__init__({
            "m": In(event_stream(_bits(channels - 1), mask_level_width)),
            "q": In(events),
            "o": Out(events),
        })

    def step_cycles(self, e_m: int, e_q: int) -> int:
        """Cycles per step with these events per frame, no stalls."""
        return e_m + e_q + self.depth - 2

    def elaborate(self, platform):
        m = Module()
        N, C, W = self._tokens, self._channels, self._CHUNK
        chunks = -(-C // W)
        mask = Signal(chunks * W)
        en = Signal()                                   # the whole pipeline advances together
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        accept = Signal()
        payload = self.q.payload
        s0_valid = Signal()
        s0_addr = Signal(self.addr_width, reset_less=True)
        s0_level = Signal(self.level_width, reset_less=True)
        s0_last = Signal(reset_less=True)
        with m.If(en):
            m.d.sync += [s0_valid.eq(accept & ((payload.level != 0) | payload.last)),
                         s0_addr.eq(payload.addr), s0_level.eq(payload.level), s0_last.eq(payload.last)]
        _, chan, (v1, addr1, level1, last1) = _divmod(
            m, s0_addr, C, (N - 1).bit_length(), [s0_valid, s0_addr, s0_level, s0_last], name="div_c", en=en)
        # L1: the chunk of the mask holding the channel's bit; L2: the bit.
        cb = (W - 1).bit_length()
        l1_valid = _register(m, v1, "l1_valid", en, reset=True)
        l1_addr, l1_level, l1_last = (_register(m, s, f"l1_{n}", en) for s, n in
                                      ((addr1, "addr"), (level1, "level"), (last1, "last")))
        l1_chunk = _register(m, mask.word_select(chan[cb:], W) if chunks > 1 else mask, "l1_chunk", en)
        l1_bit = _register(m, chan[:cb], "l1_bit", en)
        keep = l1_chunk.bit_select(l1_bit, 1) & (l1_level != 0)
        o_valid = _register(m, l1_valid & (keep | l1_last), "o_valid", en, reset=True)
        m.d.comb += self.o.valid.eq(o_valid)
        with m.If(en):
            m.d.sync += [self.o.payload.addr.eq(l1_addr), self.o.payload.level.eq(Mux(keep, l1_level, 0)),
                         self.o.payload.last.eq(l1_last)]

        # ``ready`` and ``accept`` are expressions of the state, after it (see _frame_inputs).
        with m.FSM() as fsm:
            with m.State("MASK"):
                with m.If(self.m.valid):
                    with m.If(self.m.payload.level != 0):
                        m.d.sync += mask.bit_select(self.m.payload.addr, 1).eq(1)
                    with m.If(self.m.payload.last):
                        m.next = "Q"
            with m.State("Q"):
                with m.If(self.q.valid & en & payload.last):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(en & v1 & last1):             # the last event reads its chunk now
                    m.d.sync += mask.eq(0)
                    m.next = "MASK"
        m.d.comb += [self.m.ready.eq(fsm.ongoing("MASK")), self.q.ready.eq(fsm.ongoing("Q") & en),
                     accept.eq(fsm.ongoing("Q") & self.q.valid & en)]
        return m
