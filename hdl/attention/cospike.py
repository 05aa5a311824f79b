"""SDT-V1 (sdsa1) co-spike counts for one time step (:class:`CoSpikeUnit`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..cost import CoreCost
from ..ecp5 import check_ecp5, use_ecp5
from ..events import event_stream
from .pipeline import (KIND_K, KIND_V, bits, check_int, delays, divide, division_stages, entry, frame_inputs,
                       register, times_level, widths)
from .ram import READ_LATENCY, Accumulate, Ram, Sweep, ram_cost, write_port

__all__ = ["CoSpikeUnit"]


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
        level_width, addr_width = widths(tokens, channels, levels, level_width, addr_width)
        check_int("lanes", lanes, 1, channels)
        self._tokens, self._channels, self._levels, self._lanes = tokens, channels, levels, lanes
        self._ecp5 = check_ecp5(ecp5)
        self._words = -(-channels // lanes)
        self.level_width, self.addr_width = level_width, addr_width
        self.count_width = bits(tokens * levels * levels)
        self.tag_width = bits(-(-tokens * channels // self._words))
        self.depth = 4 + READ_LATENCY + division_stages(((tokens - 1).bit_length(), channels),
                                                         ((self._words - 1).bit_length(), lanes))
        # V's map: a level and the step's tag per address; the counts: one word of ``lanes`` per group
        self._v_shape = unsigned(bits(levels) + self.tag_width)
        self._count_layout = data.ArrayLayout(unsigned(self.count_width), lanes)
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

    def cost(self, name: str) -> CoreCost:
        """The two RAMs (V's map, written straight; the counts, written through a register) and the counts'
        width (:mod:`hdl.cost`)."""
        return CoreCost("cospike", name, {"lanes": self._lanes, "count_bits": self._lanes * self.count_width,
                                          "addr": self.addr_width},
                        [ram_cost(f"{name}.v_ram", self._v_shape, self._tokens * self._channels, write_latency=0),
                         ram_cost(f"{name}.c_ram", self._count_layout, self._words)])

    def elaborate(self, platform):
        m = Module()
        N, C, D, P, G = self._tokens, self._channels, self._levels, self._lanes, self._words
        L = READ_LATENCY
        ecp5 = use_ecp5(self._ecp5, platform)
        vw, tw = bits(D), self.tag_width
        count_layout = self._count_layout
        # V's map is written straight (K's first read can follow V's last write in the next cycle)
        m.submodules.v_ram = v_ram = Ram(self._v_shape, N * C, ecp5, write_latency=0)
        m.submodules.c_ram = c_ram = Ram(count_layout, G, ecp5)
        tag = Signal(tw)                                # the current step's tag

        sel, s0 = entry(m, self.addr_width, self.level_width)
        dividing: list = []                             # the divisions' stages' valid bits
        _, chan, (valid1, kind1, level1, addr1) = divide(
            m, s0["addr"], C, (N - 1).bit_length(), [s0["valid"], s0["kind"], s0["level"], s0["addr"]],
            name="div_c", stage_valids=dividing)
        group, lane, (valid2, kind2, level2, addr2) = divide(
            m, chan, P, (G - 1).bit_length(), [valid1, kind1, level1, addr1], name="div_p", stage_valids=dividing)

        # F: a V event writes its entry; a K event reads the same address.
        f_valid = register(m, valid2, "f_valid", reset=True)
        f_kind = register(m, kind2, "f_kind")
        f_addr = register(m, addr2[:len(v_ram.rd_addr)], "f_addr")
        f_group = register(m, group[:len(c_ram.rd_addr)], "f_group")
        levels_ = delays(m, register(m, level2, "f_level"), L, "level")
        lanes_ = delays(m, register(m, lane, "f_lane"), L, "lane")
        m.d.comb += v_ram.rd_addr.eq(f_addr)
        # G: stage A of the count accumulator; the increment is formed when V's entry arrives (F + L).
        g_valid = register(m, f_valid, "g_valid", reset=True)
        g_kind = register(m, f_kind, "g_kind")
        g_group = register(m, f_group, "g_group")
        entry_level, entry_tag = v_ram.rd_data[:vw], v_ram.rd_data[vw:]
        v_level = Mux(entry_tag == tag, entry_level, 0)
        prod = times_level(levels_[L], v_level, D)
        inc = Signal(count_layout, name="inc", reset_less=True)
        m.d.sync += [inc[j].eq(Mux(lanes_[L] == j, prod, 0)) for j in range(P)]
        c_acc = Accumulate(m, "c_acc", g_valid & (g_kind == KIND_K), g_group, inc, c_ram, count_layout)
        busy = Signal()
        m.d.comb += busy.eq(s0["valid"] | Cat(*dividing, valid1, valid2).any() | f_valid | g_valid | c_acc.busy)

        # Output sweep over the counts; the scrubber zeroes G entries of V's map alongside.
        meta = data.StructLayout({"group": range(G), "last": 1})
        sweep = Sweep(m, "sweep", c_ram, self.o.ready, meta, idle_addr=g_group)
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
        write_port(m, v_ram, [(scrub, scrub_addr, 0),
                               (f_valid & (f_kind == KIND_V), f_addr, Cat(levels_[0][:vw], tag))])
        write_port(m, c_ram, [(c_clear, c_clear_addr, 0), (sweep.issued, sweep.issued_addr, 0),
                               (c_acc.wr_en, c_acc.wr_addr, c_acc.wr_data)])

        # The FSM's combinational outputs are expressions of its state, after it (see frame_inputs).
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
        frame_inputs(m, sel, [(fsm.ongoing("V"), self.v, KIND_V), (fsm.ongoing("K"), self.k, KIND_K)])
        m.d.comb += [sweep.start.eq(fsm.ongoing("K_DRAIN") & ~busy),
                     sweep.stop.eq(fsm.ongoing("OUT") & sweep.done & (scrub_left == 0))]
        return m


