"""The event-driven spike-accumulate array: ``ACC = W @ levels``, one (event, lane group) update per cycle.

For every spike event ``(i, level)`` of a frame, the core adds ``level * W[:, i]`` into ``O`` accumulators,
``P`` lanes at a time: lane group ``g`` holds output channels ``g*P .. g*P + P-1`` and reads the packed
weight word ``g * I + i`` (``hdl.packing.pack_weights``). A frame of ``k`` non-zero events therefore costs
``k * G`` cycles (``G = ceil(O / P)``), whatever the fan-in ``I``. After the frame's ``last`` event, the
accumulators are streamed out one lane group per beat and cleared as they are read.

Pipeline (one stage per cycle, never stalled while accumulating)::

    S0 issue      walk the lane groups of the current event; weight address g*I + i from a register
    S1 read       block-RAM read (the address is registered inside the DP16KD)
    S2 outreg     the block RAM's output register (ECP5 DP16KD, hdl.ecp5.block_ram) or a fabric register
    S3 product    weight word registered again in the fabric; level * w as a shift-add of the level's bits
                  (no multiplier); accumulator read of group g issued (synchronous, one memory per lane)
    S4 add        acc[g] + product written back (a bypass feeds the previous sum when G == 1)
"""

from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .cost import CoreCost
from .cost import Memory as MemoryCost
from .ecp5 import block_ram, check_ecp5, use_ecp5
from .events import event_stream
from .packing import accumulator_width, groups, pack_weights

__all__ = ["SpikeAccumulator", "acc_layout", "PIPELINE_DEPTH"]

#: Cycles from issuing an (event, group) update to its accumulator write (S0 .. S4).
PIPELINE_DEPTH = 5


def acc_layout(group_width: int, lanes: int, acc_width: int) -> data.StructLayout:
    """``{group, values, last}``: one lane group of a frame's accumulators.

    Parameters
    ----------
    group_width : int
        Bits of the lane-group index.
    lanes : int
        Lanes ``P`` per group (``values`` has ``P`` elements; lanes past ``O`` read 0).
    acc_width : int
        Signed width of each accumulator.
    """
    return data.StructLayout({
        "group": unsigned(group_width),
        "values": data.ArrayLayout(signed(acc_width), lanes),
        "last": 1,
    })


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _shift_add(level, weight):
    """``level * weight`` as a sum of ``weight << k`` for the set bits ``k`` of ``level`` (a balanced tree)."""
    terms = [Mux(level[k], weight << k, 0) for k in range(len(level))]
    while len(terms) > 1:
        terms = [terms[j] + terms[j + 1] if j + 1 < len(terms) else terms[j] for j in range(0, len(terms), 2)]
    return terms[0]


class SpikeAccumulator(wiring.Component):
    """Event-driven accumulate array: ``acc[o] = sum over events (i, level) of level * W[o, i]``.

    Each frame is a run of events closed by one with ``last`` set; level-0 events are accepted and
    ignored (one cycle each). An event with ``level > 0`` occupies the issue stage for ``G`` cycles, one
    per lane group, and the next event is accepted in the cycle its last group issues, so updates flow at
    one (event, group) per cycle with no stall, also when ``G == 1`` (a bypass covers the back-to-back
    updates of one group). After the ``last`` event drains (``PIPELINE_DEPTH`` cycles), groups
    ``0 .. G-1`` are sent on ``acc``, in order, one per beat, and each is cleared as it is read; the next
    frame's events are accepted after the final group's handshake. After reset the core spends ``G``
    cycles clearing the accumulator memories (``events.ready`` is low meanwhile).

    Cycles per frame without stalls, from the first event offered to the final beat taken: ``k * G + G + 6``
    for ``k > 0`` non-zero events (plus one per level-0 event), ``G + 3`` for an empty frame.

    Each input is expected at most once per frame (``acc_width``'s default is sized for that); beyond the
    accumulator's range, sums wrap modulo ``2**acc_width``. Event addresses must be below ``I``.

    Parameters
    ----------
    lanes : int
        Lanes ``P``: output channels updated per cycle.
    weights : array of int, shape [O, I]
        Signed ``weight_bits``-bit weights, stored with ``hdl.packing.pack_weights(weights, weight_bits, P)``.
    weight_bits : int
        ``b``, the width of each weight.
    level_width : int
        Bits of a spike level (levels ``0 .. 2**level_width - 1``; 0 is a no-op).
    acc_width : int, optional
        Signed accumulator width; defaults to ``accumulator_width(I, b, 2**level_width - 1)``.
    dense : bool, optional
        Walk the lane groups for level-0 events too (adding 0): every synapse costs a cycle whether it
        spiked or not, the baseline that the event-driven schedule is compared with (``--dense``).
    ecp5 : bool or "model", optional
        Build the weight memory from ECP5 DP16KD block RAMs with their output register on
        (:func:`hdl.ecp5.block_ram`), rather than from a ``Memory`` (yosys maps it to DP16KDs without that
        register) followed by a fabric register: same contents and latency, without the unregistered
        block RAM's 5.6 ns clock-to-output (which held the core to 143 MHz at P = 16). The choice shared
        by every core (:mod:`hdl.ecp5`): ``None`` (default) follows the platform
        (``platform.family == "ecp5"``), ``True`` forces the primitives (out-of-context synthesis,
        ``bench.synth``), ``"model"`` simulates them with behavioural models, ``False`` uses the ``Memory``
        (also what Verilator needs).

    Members
    -------
    events : ``In(event_stream(addr_width, level_width))``
        Spike events ``{addr, level, last}``; ``addr`` is the input index ``i``.
    acc : ``Out(stream.Signature(acc_layout(group_width, P, acc_width)))``
        The frame's accumulators, one lane group per beat, ``last`` on group ``G - 1``.

    Attributes
    ----------
    lanes, groups, in_features, out_features, weight_bits, level_width, acc_width, addr_width, group_width : int
        ``P``, ``G = ceil(O / P)``, ``I``, ``O``, ``b``, the level width, the accumulator width, the event
        address width and the group index width.
    weights : ndarray
        A read-only copy of ``W``.
    """

    def __init__(self, lanes, weights, weight_bits, level_width, acc_width=None, *, dense=False, ecp5=None):
        if not _is_int(lanes) or lanes < 1:
            raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
        if not _is_int(weight_bits) or weight_bits < 1:
            raise TypeError(f"weight_bits must be a positive integer, not {weight_bits!r}")
        if not _is_int(level_width) or level_width < 1:
            raise TypeError(f"level_width must be a positive integer, not {level_width!r}")
        w = np.array(weights)
        if w.dtype == object or not (np.issubdtype(w.dtype, np.integer) or w.size == 0):
            raise TypeError(f"weights must be an array of integers, not dtype {w.dtype} ({weights!r:.60})")
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weights must be a non-empty 2-D array [O, I], not shape {w.shape}")
        lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
        if w.min() < lo or w.max() > hi:
            bad = w[(w < lo) | (w > hi)][0]
            raise ValueError(f"weights must be signed {weight_bits}-bit integers in [{lo}, {hi}], "
                             f"not {int(bad)!r}")
        out_features, in_features = w.shape
        if acc_width is None:
            acc_width = accumulator_width(in_features, weight_bits, (1 << level_width) - 1)
        elif not _is_int(acc_width) or acc_width < 1:
            raise TypeError(f"acc_width must be a positive integer, not {acc_width!r}")
        check_ecp5(ecp5)

        w = w.astype(np.int64)
        w.flags.writeable = False
        self._weights = w
        self._lanes = int(lanes)
        self._weight_bits = int(weight_bits)
        self._level_width = int(level_width)
        self._acc_width = int(acc_width)
        self._ecp5 = ecp5
        self._dense = bool(dense)
        self._in_features = int(in_features)
        self._out_features = int(out_features)
        self._groups = groups(out_features, lanes)
        self._addr_width = max(1, (in_features - 1).bit_length())
        self._group_width = max(1, (self._groups - 1).bit_length())
        super().__init__({
            "events": In(event_stream(self._addr_width, self._level_width)),
            "acc": Out(stream.Signature(acc_layout(self._group_width, self._lanes, self._acc_width))),
        })

    #: Cycles of a frame after its last event has been issued: the pipeline's drain and the readout of the
    #: ``G`` groups take ``G + READOUT_EXTRA_CYCLES``.
    READOUT_EXTRA_CYCLES = 6

    lanes = property(lambda self: self._lanes)
    groups = property(lambda self: self._groups)
    in_features = property(lambda self: self._in_features)
    out_features = property(lambda self: self._out_features)
    weight_bits = property(lambda self: self._weight_bits)
    level_width = property(lambda self: self._level_width)
    acc_width = property(lambda self: self._acc_width)
    addr_width = property(lambda self: self._addr_width)
    group_width = property(lambda self: self._group_width)
    weights = property(lambda self: self._weights)

    @property
    def used_lanes(self) -> int:
        """Lanes that hold an output channel in some group (``min(P, O)``); the others are constant 0, with
        no accumulator memory."""
        return min(self._lanes, self._out_features)

    def issue_cycles(self, events: float) -> float:
        """Cycles that ``events`` non-zero events occupy the issue stage: ``G`` each (``events`` may be a mean)."""
        return events * self._groups

    @property
    def readout_cycles(self) -> int:
        """Cycles of a frame after its last event's groups are issued: ``G + READOUT_EXTRA_CYCLES``."""
        return self._groups + self.READOUT_EXTRA_CYCLES

    def frame_cycles(self, events: float) -> float:
        """Cycles of a frame of ``events > 0`` non-zero events without stalls, from the first event offered
        to the final beat taken: ``events * G + G + 6``."""
        return self.issue_cycles(events) + self.readout_cycles

    def cost(self, name: str) -> CoreCost:
        """The weight memory (DP16KD tiles, the columns of the used lanes read), one accumulator memory per
        used lane, the lanes' adders and products (:mod:`hdl.cost`)."""
        P, G, I, b, A = self._lanes, self._groups, self._in_features, self._weight_bits, self._acc_width
        used = self.used_lanes
        memories = [MemoryCost(f"{name}.weights", P * b, G * I, "primitive", rom=True, init=True,
                               used_width=used * b)]
        memories += [MemoryCost(f"{name}.acc{lane}", A, G) for lane in range(used)]
        return CoreCost("accumulate", name, {"lanes": used, "acc_bits": used * A,
                                             "product_bits": used * b * self._level_width,
                                             "addr": Shape.cast(range(G * I)).width}, memories)

    def elaborate(self, platform):
        m = Module()
        P, G, I, b = self._lanes, self._groups, self._in_features, self._weight_bits
        L, A, gw = self._level_width, self._acc_width, self._group_width
        used_lanes = self.used_lanes

        ecp5 = use_ecp5(self._ecp5, platform)

        # --- accumulators: one narrow memory per lane, G words of A bits ---
        acc_rd, acc_wr = [], []
        for l in range(used_lanes):
            mem = Memory(shape=signed(A), depth=G, init=[])
            m.submodules[f"acc{l}"] = mem
            acc_wr.append(mem.write_port())
            acc_rd.append(mem.read_port(transparent_for=()))

        # --- control: one-hot phase flags (single-bit terms in the wide-fanout enables) ---
        accum = Signal()                               # accepting events, updates flowing
        drain = Signal()                               # the frame's last update is in the pipeline
        readout = Signal()                             # sending (and clearing) groups 0..G-1
        clearing = Signal(init=1)                      # after reset: clear the accumulator memories
        cnt = Signal(range(max(G, 2)))                 # group counter of the clear and readout walks
        cnt_last = Signal(init=G == 1)                 # cnt == G - 1

        # S0: the event being issued, one lane group per cycle
        busy = Signal()
        g0 = Signal(gw)
        at_last = Signal()                             # g0 == G - 1
        waddr = Signal(range(G * I))                   # g0 * I + i, kept in a register
        lvl0 = Signal(L)
        last0 = Signal()
        # S1 .. S4: valid, group and level of each stage's update
        v = [busy] + [Signal(name=f"v{s}") for s in range(1, 5)]
        g = [g0] + [Signal(gw, name=f"g{s}") for s in range(1, 5)]
        lvl = [lvl0] + [Signal(L, name=f"lvl{s}") for s in range(1, 4)]
        for s in range(1, 5):
            m.d.sync += [v[s].eq(v[s - 1]), g[s].eq(g[s - 1])]
        for s in range(1, 4):
            m.d.sync += lvl[s].eq(lvl[s - 1])

        ev = self.events.payload
        m.d.comb += self.events.ready.eq(accum & (~busy | (at_last & ~last0)))
        accept = self.events.valid & self.events.ready

        with m.If(accept):
            with m.If((ev.level != 0) | self._dense):
                m.d.sync += [busy.eq(1), g0.eq(0), at_last.eq(G == 1), waddr.eq(ev.addr),
                             lvl0.eq(ev.level), last0.eq(ev.last)]
            with m.Else():
                m.d.sync += busy.eq(0)
                with m.If(ev.last):
                    m.d.sync += [accum.eq(0), drain.eq(1)]
        with m.Elif(busy):
            with m.If(at_last):
                m.d.sync += busy.eq(0)
                with m.If(last0):
                    m.d.sync += [accum.eq(0), drain.eq(1)]
            with m.Else():
                m.d.sync += [g0.eq(g0 + 1), at_last.eq(g0 == G - 2), waddr.eq(waddr + I)]

        # S1, S2: the weight word (g, i) read from block RAM, through its output register (or a fabric
        # register after a plain Memory). Word g*I + i holds W[g*P + l, i] in lane l (pack_weights).
        words = pack_weights(self._weights, b, P)
        w2 = block_ram(m, "weights", width=P * b, depth=G * I, read_addr=waddr, init=words, ecp5=ecp5)
        # S3: registered again in the fabric, beside the lanes' logic (the block RAMs sit in a few rows),
        # then level * w per lane as a shift-add, registered into S4
        w3 = Signal(P * b)
        m.d.sync += w3.eq(w2)
        p4 = [Signal(signed(b + L), name=f"p4_{l}") for l in range(used_lanes)]
        for l in range(used_lanes):
            m.d.sync += p4[l].eq(_shift_add(lvl[3], w3[l * b:(l + 1) * b].as_signed()))

        # S4: accumulate; the accumulator read was issued in S3. Consecutive updates hit the same group
        # only when G == 1 (an event walks groups 0..G-1 in order and the next one starts at 0), so only
        # then can that read miss the write of the cycle before: a bypass register supplies that sum.
        sums = [Signal(signed(A), name=f"sum{l}") for l in range(used_lanes)]
        if G == 1:
            fwd = Signal()
            prev = [Signal(signed(A), name=f"prev{l}") for l in range(used_lanes)]
            m.d.sync += fwd.eq(v[4])
            for l in range(used_lanes):
                m.d.comb += sums[l].eq(Mux(fwd, prev[l], acc_rd[l].data) + p4[l])
                m.d.sync += prev[l].eq(sums[l])
        else:
            for l in range(used_lanes):
                m.d.comb += sums[l].eq(acc_rd[l].data + p4[l])

        # accumulator ports: the accumulate pipeline, or the clear and readout walks over the groups
        out_valid = Signal()
        out_group = Signal(gw)
        out_last = Signal()
        # READOUT: read group cnt this cycle (the beat is free or being taken, and G-1 not read yet)
        issue = readout & (~out_valid | (self.acc.ready & ~out_last))
        walking = clearing | issue                     # group cnt is to be cleared
        # writes from registers only (their enable and address fan out to every lane): the accumulate
        # write of S4, or the clear of the group read (or walked) the cycle before
        we, wa, clr = Signal(), Signal(gw), Signal()
        m.d.sync += [we.eq(walking | v[3]), wa.eq(Mux(walking, cnt, g[3])), clr.eq(walking)]
        for l in range(used_lanes):
            m.d.comb += [
                acc_rd[l].addr.eq(Mux(readout, cnt, g[3])),
                acc_rd[l].en.eq(~readout | ~out_valid | (self.acc.ready & ~out_last)),
                acc_wr[l].addr.eq(wa),
                acc_wr[l].data.eq(Mux(clr, 0, sums[l])),
                acc_wr[l].en.eq(we),
            ]

        with m.If(walking):
            m.d.sync += [cnt.eq(Mux(cnt_last, 0, cnt + 1)), cnt_last.eq(Mux(cnt_last, G == 1, cnt == G - 2))]

        with m.If(clearing & cnt_last):
            m.d.sync += [clearing.eq(0), accum.eq(1)]
        # the update in S4 (if any) is written at the end of this cycle: readout may read the next one
        with m.If(drain & ~(v[1] | v[2] | v[3])):
            m.d.sync += [drain.eq(0), readout.eq(1)]
        with m.If(issue):
            m.d.sync += [out_valid.eq(1), out_group.eq(cnt), out_last.eq(cnt_last)]
        with m.If(out_valid & self.acc.ready & out_last):
            m.d.sync += [out_valid.eq(0), readout.eq(0), accum.eq(1)]

        m.d.comb += [
            self.acc.valid.eq(out_valid),
            self.acc.payload.group.eq(out_group),
            self.acc.payload.last.eq(out_last),
        ]
        for l in range(used_lanes):
            m.d.comb += self.acc.payload.values[l].eq(acc_rd[l].data)
        return m
