"""Linear spike-driven self-attention (QSD / SDT-V2) for one time step (:class:`LinearAttentionUnit`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..cost import CoreCost
from ..ecp5 import check_ecp5, use_ecp5
from ..events import event_stream
from .pipeline import (KIND_K, KIND_Q, KIND_V, bits, check_int, delays, divide, division_stages, entry,
                       frame_inputs, register, times_level, widths)
from .ram import READ_LATENCY, Accumulate, Ram, Sweep, ram_cost, write_port

__all__ = ["LinearAttentionUnit"]


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
        level_width, addr_width = widths(tokens, channels, levels, level_width, addr_width)
        check_int("heads", heads)
        if channels % heads:
            raise ValueError(f"heads must divide channels ({channels}), not {heads!r}")
        self._tokens, self._channels, self._heads, self._levels = tokens, channels, heads, levels
        self._d = channels // heads
        self._ecp5 = check_ecp5(ecp5)
        self.level_width, self.addr_width = level_width, addr_width
        self.kv_width = bits(tokens * levels * levels)
        self.acc_width = bits(self._d * levels * tokens * levels * levels)
        self.depth = 4 + READ_LATENCY + division_stages(((tokens - 1).bit_length(), channels),
                                                         ((heads - 1).bit_length(), self._d))
        # V's map and A: one word per (token, head), the head index padded to a power of two; KV: one per channel
        self._words = tokens << (heads - 1).bit_length()
        self._v_layout = data.ArrayLayout(unsigned(bits(levels)), self._d)
        self._kv_layout = data.ArrayLayout(unsigned(self.kv_width), self._d)
        self._a_layout = data.ArrayLayout(unsigned(self.acc_width), self._d)
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
        return (e_v + e_k + e_q + 3 * self.depth
                + max(self._tokens * self._heads + 3, self._words, self._channels) + 3)

    def cost(self, name: str) -> CoreCost:
        """The three RAMs (V's map, KV, A: block or distributed RAM, written through registers) and the
        datapath's width (:mod:`hdl.cost`)."""
        d = self._d
        return CoreCost("linear_attention", name,
                        {"d": d, "data_bits": d * (bits(self._levels) + self.kv_width + self.acc_width),
                         "addr": self.addr_width},
                        [ram_cost(f"{name}.v_ram", self._v_layout, self._words),
                         ram_cost(f"{name}.kv_ram", self._kv_layout, self._channels),
                         ram_cost(f"{name}.a_ram", self._a_layout, self._words)])

    def elaborate(self, platform):
        m = Module()
        N, C, H, D, d = self._tokens, self._channels, self._heads, self._levels, self._d
        L = READ_LATENCY
        ecp5 = use_ecp5(self._ecp5, platform)
        hb = (H - 1).bit_length()                      # head bits of a padded word address
        nq = (N - 1).bit_length()
        words = self._words
        v_layout, kv_layout, a_layout = self._v_layout, self._kv_layout, self._a_layout
        m.submodules.v_ram = v_ram = Ram(v_layout, words, ecp5)
        m.submodules.kv_ram = kv_ram = Ram(kv_layout, C, ecp5)
        m.submodules.a_ram = a_ram = Ram(a_layout, words, ecp5)

        sel, s0 = entry(m, self.addr_width, self.level_width)
        # addr -> (token, channel) -> (head, lane)
        dividing: list = []                             # the divisions' stages' valid bits
        token, chan, (valid1, kind1, level1) = divide(
            m, s0["addr"], C, nq, [s0["valid"], s0["kind"], s0["level"]], name="div_c", stage_valids=dividing)
        head, lane, (valid2, kind2, level2, token2, chan2) = divide(
            m, chan, d, hb, [valid1, kind1, level1, token, chan], name="div_d", stage_valids=dividing)

        # F: V's events enter v_acc (stage A); K's and Q's read their source word (V's map, a KV row).
        f_valid = register(m, valid2, "f_valid", reset=True)
        f_kind = register(m, kind2, "f_kind")
        f_word = register(m, Cat(head[:hb], token2[:max(1, nq)])[:len(v_ram.rd_addr)], "f_word")
        f_chan = register(m, chan2[:len(kv_ram.rd_addr)], "f_chan")
        levels_ = delays(m, register(m, level2, "f_level"), L, "level")
        lanes_ = delays(m, register(m, lane, "f_lane"), L - 1, "lane")

        # V's map: a V event adds its level into one lane (a lane that was zero).
        v_inc = Signal(v_layout, name="v_inc", reset_less=True)
        m.d.sync += [v_inc[j].eq(Mux(lanes_[L - 1] == j, levels_[L - 1], 0)) for j in range(d)]
        v_acc = Accumulate(m, "v_acc", f_valid & (f_kind == KIND_V), f_word, v_inc, v_ram, v_layout)
        m.d.comb += v_ram.rd_addr.eq(f_word)

        # G: stage A of kv_acc (K's events) and a_acc (Q's events). Their increments, level x source,
        # are formed when the source arrives (F + L) and registered for stage C (G + L).
        g_valid = register(m, f_valid, "g_valid", reset=True)
        g_kind = register(m, f_kind, "g_kind")
        g_word, g_chan = register(m, f_word, "g_word"), register(m, f_chan, "g_chan")
        prod_k = Signal(kv_layout, name="prod_k", reset_less=True)
        prod_q = Signal(a_layout, name="prod_q", reset_less=True)
        m.d.sync += [prod_k[j].eq(times_level(levels_[L], v_ram.rd_data[j], D)) for j in range(d)]
        m.d.sync += [prod_q[j].eq(times_level(levels_[L], kv_ram.rd_data[j], D)) for j in range(d)]
        kv_acc = Accumulate(m, "kv_acc", g_valid & (g_kind == KIND_K), g_chan, prod_k, kv_ram, kv_layout)
        a_acc = Accumulate(m, "a_acc", g_valid & (g_kind == KIND_Q), g_word, prod_q, a_ram, a_layout)
        busy = Signal()
        m.d.comb += busy.eq(s0["valid"] | Cat(*dividing, valid1, valid2).any() | f_valid | g_valid
                            | v_acc.busy | kv_acc.busy | a_acc.busy)

        q_phase = Signal()                              # KV is read as Q's source, not by kv_acc (a register)
        m.d.comb += kv_ram.rd_addr.eq(Mux(q_phase, f_chan, g_chan))     # A's read port: the sweep's

        # Output sweep over A, tokens outer, heads inner.
        meta = data.StructLayout({"token": range(N), "head": range(H), "last": 1})
        sweep = Sweep(m, "sweep", a_ram, self.o.ready, meta, idle_addr=g_word)
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
        write_port(m, v_ram, [(clr_v, clr_addr, 0), (v_acc.wr_en, v_acc.wr_addr, v_acc.wr_data)])
        write_port(m, kv_ram, [(clr_kv, clr_addr, 0), (kv_acc.wr_en, kv_acc.wr_addr, kv_acc.wr_data)])
        write_port(m, a_ram, [(clr_a, clr_addr, 0), (sweep.issued, sweep.issued_addr, 0),
                               (a_acc.wr_en, a_acc.wr_addr, a_acc.wr_data)])

        # The FSM's combinational outputs are expressions of its state, after it (see frame_inputs).
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
        frame_inputs(m, sel, [(fsm.ongoing("V"), self.v, KIND_V), (fsm.ongoing("K"), self.k, KIND_K),
                               (fsm.ongoing("Q"), self.q, KIND_Q)])
        m.d.comb += [sweep.start.eq(fsm.ongoing("Q_DRAIN") & ~busy),
                     sweep.stop.eq(fsm.ongoing("OUT") & sweep.done & ~clr_v & ~clr_kv)]
        return m


