"""The event queue: compresses a spike map into a stream of ``(addr, level)`` events, skipping zeros.

A frame arrives as whole words of ``K`` spike levels (word ``w`` holds neurons ``w*K .. w*K+K-1``, the last
word has ``last`` set); it leaves as one event per non-zero level, in ascending address order, the final
event of the frame carrying ``last`` (a level-0 event closes a frame whose final word has no spike, see
:mod:`hdl.events`). The work downstream is then proportional to the number of spikes, not to the layer.

Micro-architecture
------------------
The word is split into segments of ``S`` lanes, and the same small engine is used twice::

    spikes -> R -> engine A (segments of a word) -> skid -> engine B (lanes of a segment) -> out -> events

``R`` registers the word with its per-lane non-zero mask and per-segment non-zero flags, and counts the
words of the frame. An engine holds one item (a word for A, a segment for B) with a one-hot ``cur`` (the
lane being emitted), the mask of the lanes still to come (``rest``) and ``done`` (``rest`` is empty), all
registered: each cycle it emits ``cur`` into its output register and advances to the lowest set bit of
``rest``; when ``done`` it loads the next item in the same cycle, with ``cur``/``rest``/``done`` computed
from the incoming mask. No reduction wider than a segment or than one engine's lane count (at most 8 for
``K <= 64``) sits in any register-to-register path, so Fmax hardly depends on ``K`` (on the LFE5U-85F,
speed 6: 170-220 MHz for K = 8..64, 164 MHz at K = 128, where engine A has 16 lanes). ``A`` passes only non-zero
segments to ``B`` (and, for a final word without spikes, one empty segment that ``B`` turns into the
closing level-0 event). The skid buffer (:class:`hdl.lanes.StreamSlice`) makes the ready signal towards
``A`` a register, so that no ready chain runs through the whole core; ``out`` (a slice of latency 0) does
the same for the consumer's ``events.ready``, without delaying the events. For ``K <= S`` only engine ``B``
exists.

Timing: ``B`` emits one event per cycle; a word with ``z`` non-zero levels occupies the core for at most
``max(1, z)`` cycles, exactly that with one engine (with two, all-zero words are skipped by ``A`` in one
cycle each, in parallel with ``B``'s work on earlier words). A word accepted at clock edge ``t`` has its
first event in the output register at edge ``t + 2`` with one engine, ``t + 5`` with two.

``events.valid`` and ``events.payload`` come from flip-flops through one multiplexer (``out``'s held beat).
``events.ready`` goes no further than ``out``'s register, and ``spikes.ready`` is combinational only within
the core.

Synthesis note: Amaranth names the elements of an ``ArrayLayout`` field ``x.levels[3]``, which collides with
yosys's bit names of ``x.levels`` in yosys 0.70's abc9 reintegration (``Assert GetSize(conn.first) ==
GetSize(conn.second)`` in rtlil.cc) for some designs; ``rename -hide w:*[[]*`` after ``read_rtlil`` avoids
it. This affects any design with such a payload, not this core alone.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .cost import CoreCost
from .events import event_stream
from .lanes import StreamSlice

__all__ = ["EventQueue", "spike_word_layout"]


def spike_word_layout(word_lanes: int, level_width: int) -> data.StructLayout:
    """``{levels, last}``: ``word_lanes`` spike levels of ``level_width`` bits and the end of frame."""
    return data.StructLayout({"levels": data.ArrayLayout(unsigned(level_width), word_lanes), "last": 1})


def _lowest(x):
    """One-hot of the lowest set bit of ``x`` (0 if ``x`` is 0)."""
    return x & -x


def _at_most_one(x):
    """1 if at most one bit of ``x`` is set: a tree of (any, several) pairs, ceil(log2(len)) levels."""
    n = len(x)
    if n == 1:
        return Const(1, 1)
    nodes = [(x[i] | x[i + 1], x[i] & x[i + 1]) for i in range(0, n - 1, 2)]
    if n % 2:
        nodes.append((x[n - 1], None))
    while len(nodes) > 1:
        nxt = []
        for i in range(0, len(nodes) - 1, 2):
            (a_any, a_many), (b_any, b_many) = nodes[i], nodes[i + 1]
            many = a_any & b_any
            for part in (a_many, b_many):
                if part is not None:
                    many = many | part
            nxt.append((a_any | b_any, many))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return ~nodes[0][1]


def _encode(onehot, width: int):
    """Index of the set bit of a one-hot value (OR trees, no priority)."""
    n = len(onehot)
    return Cat(*[Cat(*[onehot[j] for j in range(n) if (j >> t) & 1]).any() for t in range(width)])


def _select(onehot, lanes, lane_width: int):
    """The lane picked by a one-hot value (AND-OR); 0 if none is."""
    acc = Const(0, lane_width)
    for j in range(len(onehot)):
        acc = acc | Mux(onehot[j], lanes[j * lane_width:(j + 1) * lane_width], 0)
    return acc


class _Engine(wiring.Component):
    """One compression level: an item of ``lanes`` lanes in, one output per non-zero lane out.

    Input payload: ``mask`` (non-zero lanes), ``lanes`` (``lanes * lane_width`` bits), ``last``, ``tag``.
    Output payload: ``lane`` (the selected lane), ``last`` (``last`` of the item, on its final output),
    ``tag`` (``combine(index, tag)``). An item with an empty mask produces nothing, or one output with
    ``lane = 0`` if its ``last`` is set.
    """

    def __init__(self, lanes: int, lane_width: int, tag_width: int, out_tag_width: int, combine):
        self._lanes = lanes
        self._lane_width = lane_width
        self._tag_width = tag_width
        self._index_width = (lanes - 1).bit_length()
        self._combine = combine
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "mask": lanes, "lanes": lanes * lane_width, "last": 1, "tag": tag_width}))),
            "o": Out(stream.Signature(data.StructLayout({
                "lane": lane_width, "last": 1, "tag": out_tag_width}))),
        })

    def elaborate(self, platform):
        m = Module()
        n, pw = self._lanes, self._lane_width

        valid = Signal()
        lanes = Signal(n * pw)
        last = Signal()
        tag = Signal(self._tag_width)
        cur = Signal(n)            # one-hot: the lane emitted next (0 for an empty item)
        rest = Signal(n)           # lanes still to come after cur
        done = Signal()            # rest is empty
        has = Signal()             # the item has a non-zero lane

        ip = self.i.payload
        in_cur = Signal(n)
        next_cur = Signal(n)
        index = Signal(self._index_width)
        m.d.comb += [
            in_cur.eq(_lowest(ip.mask)),
            next_cur.eq(_lowest(rest)),
            index.eq(_encode(cur, self._index_width)),
        ]

        o = self.o
        emit, o_free, step, free = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            emit.eq(has | last),
            o_free.eq(~o.valid | o.ready),
            step.eq(valid & (o_free | ~emit)),
            free.eq(~valid | (step & done)),
            self.i.ready.eq(free),
        ]

        with m.If(o_free):
            m.d.sync += o.valid.eq(0)
        with m.If(step & emit):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.lane.eq(_select(cur, lanes, pw)),
                o.payload.last.eq(last & done),
                o.payload.tag.eq(self._combine(index, tag)),
            ]
        with m.If(step):
            m.d.sync += [cur.eq(next_cur), rest.eq(rest & ~next_cur), done.eq(_at_most_one(rest))]
            with m.If(done):
                m.d.sync += valid.eq(0)
        with m.If(self.i.valid & free):
            m.d.sync += [
                valid.eq(1), lanes.eq(ip.lanes), last.eq(ip.last), tag.eq(ip.tag),
                cur.eq(in_cur), rest.eq(ip.mask & ~in_cur), done.eq(_at_most_one(ip.mask)),
                has.eq(ip.mask.any()),
            ]
        return m


class EventQueue(wiring.Component):
    """Spike-map compressor: words of spike levels in, ``(addr, level, last)`` events out.

    Parameters
    ----------
    word_lanes : int
        ``K``, neurons per input word (>= 1). Word ``w`` of a frame covers neurons ``w*K .. w*K+K-1``.
    level_width : int
        Bits of a spike level (>= 1): 1 for binary spikes, 2 for ``D = 2``, 3 for ``D = 4``.
    addr_width : int
        Bits of a neuron address within a frame; ``2**addr_width >= word_lanes``. Addresses wrap modulo
        ``2**addr_width`` if a frame has more neurons than that.
    segment_lanes : int or None
        ``S``, lanes per segment (a power of two >= 2); ``None`` picks 8. With ``K <= S`` the core has a
        single engine over the whole word.

    Members
    -------
    spikes : ``In(stream.Signature(spike_word_layout(K, level_width)))``
        The words of a frame in order; ``last`` on the frame's final word. The core counts the words
        itself and restarts the count after ``last``.
    events : ``Out(hdl.events.event_stream(addr_width, level_width))``
        One event per non-zero level, ascending addresses; the frame's final event has ``last`` set. If
        the frame's final word has no spike, a level-0 event (address of that word's first neuron)
        closes the frame. ``valid`` and the payload come from flip-flops.
    """

    def __init__(self, word_lanes: int, level_width: int, addr_width: int, *, segment_lanes: int | None = None):
        for name, value, low in (("word_lanes", word_lanes, 1), ("level_width", level_width, 1),
                                 ("addr_width", addr_width, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise TypeError(f"{name} must be an integer >= {low}, not {value!r}")
        if (1 << addr_width) < word_lanes:
            raise ValueError(f"addr_width {addr_width!r} cannot address the {word_lanes!r} neurons of one "
                             f"word (needs >= {(word_lanes - 1).bit_length()})")
        if segment_lanes is None:
            segment_lanes = 8
        elif (not isinstance(segment_lanes, int) or isinstance(segment_lanes, bool) or segment_lanes < 2
              or segment_lanes & (segment_lanes - 1)):
            raise TypeError(f"segment_lanes must be a power of two >= 2 or None, not {segment_lanes!r}")
        self._word_lanes = word_lanes
        self._level_width = level_width
        self._addr_width = addr_width
        self._segment_lanes = segment_lanes
        super().__init__({
            "spikes": In(stream.Signature(spike_word_layout(word_lanes, level_width))),
            "events": Out(event_stream(addr_width, level_width)),
        })

    @property
    def word_lanes(self) -> int:
        return self._word_lanes

    @property
    def level_width(self) -> int:
        return self._level_width

    @property
    def addr_width(self) -> int:
        return self._addr_width

    @property
    def segment_lanes(self) -> int:
        return self._segment_lanes

    def cost(self, name: str) -> CoreCost:
        """Its size: lanes, level bits and address width (no memory; :mod:`hdl.cost`)."""
        return CoreCost("events", name, {"lanes": self._word_lanes, "level_bits": self._word_lanes * self._level_width,
                                         "addr": self._addr_width})

    @property
    def levels_of_engines(self) -> int:
        """1 if one engine covers the word (``K <= S``), else 2."""
        return 1 if self._word_lanes <= self._segment_lanes else 2

    def elaborate(self, platform):
        m = Module()
        k, lw, aw = self._word_lanes, self._level_width, self._addr_width
        two = self.levels_of_engines == 2
        s = self._segment_lanes if two else k          # lanes of engine B
        na = -(-k // s)                                 # segments per word (lanes of engine A)
        sb = (s - 1).bit_length()                       # index bits of B
        sa = (na - 1).bit_length()                      # index bits of A
        pow2 = k & (k - 1) == 0
        # The tag carried along with a word: its number in the frame when K is a power of two (the address
        # is then a concatenation), else the address of its first neuron (adders after each engine).
        tag_width = max(1, aw - (k.bit_length() - 1)) if pow2 else aw

        # --- R: register the word, its lane mask and segment flags; count the words of the frame
        lv = self.spikes.payload.levels
        pad = na * s - k
        levels = Cat(*[lv[j] for j in range(k)], Const(0, pad * lw))
        mask = Cat(*[lv[j] != 0 for j in range(k)], Const(0, pad))
        word = Signal(tag_width)
        r_valid = Signal()
        r_levels = Signal(na * s * lw)
        r_mask = Signal(na * s)
        r_segments = Signal(na)
        r_last = Signal()
        r_tag = Signal(tag_width)
        r_ready = Signal()
        m.d.comb += self.spikes.ready.eq(~r_valid | r_ready)
        with m.If(r_ready):
            m.d.sync += r_valid.eq(0)
        with m.If(self.spikes.valid & self.spikes.ready):
            m.d.sync += [
                r_valid.eq(1),
                r_levels.eq(levels),
                r_mask.eq(mask),
                r_segments.eq(Cat(*[mask[i * s:(i + 1) * s].any() for i in range(na)])),
                r_last.eq(self.spikes.payload.last),
                r_tag.eq(word),
                word.eq(Mux(self.spikes.payload.last, 0, word + (1 if pow2 else k))),
            ]

        # --- A: the non-zero segments of a word
        if two:
            a_tag_width = sa + tag_width if pow2 else aw
            engine_a = _Engine(na, s * (lw + 1), tag_width, a_tag_width,
                               (lambda i, t: Cat(i, t)) if pow2 else (lambda i, t: t + i * s))
            m.submodules.engine_a = engine_a
            m.d.comb += [
                engine_a.i.valid.eq(r_valid),
                r_ready.eq(engine_a.i.ready),
                engine_a.i.payload.mask.eq(r_segments),
                engine_a.i.payload.lanes.eq(Cat(*[Cat(r_levels[i * s * lw:(i + 1) * s * lw],
                                                      r_mask[i * s:(i + 1) * s]) for i in range(na)])),
                engine_a.i.payload.last.eq(r_last),
                engine_a.i.payload.tag.eq(r_tag),
            ]
            m.submodules.skid = skid = StreamSlice(engine_a.o.payload.shape())
            wiring.connect(m, engine_a.o, skid.i)
            b_valid, b_ready, b_last, b_tag = skid.o.valid, skid.o.ready, skid.o.payload.last, skid.o.payload.tag
            b_levels, b_mask = skid.o.payload.lane[:s * lw], skid.o.payload.lane[s * lw:]
            b_tag_width = a_tag_width
        else:
            b_valid, b_ready, b_last, b_tag = r_valid, r_ready, r_last, r_tag
            b_levels, b_mask = r_levels, r_mask
            b_tag_width = tag_width

        # --- B: the non-zero lanes of a segment (or word)
        engine_b = _Engine(s, lw, b_tag_width, sb + b_tag_width if pow2 else aw,
                           (lambda i, t: Cat(i, t)) if pow2 else (lambda i, t: t + i))
        m.submodules.engine_b = engine_b
        # the consumer's ready stops at a register (the events pass in the same cycle)
        m.submodules.out = out = StreamSlice(self.events.payload.shape(), latency=0)
        m.d.comb += [
            engine_b.i.valid.eq(b_valid),
            b_ready.eq(engine_b.i.ready),
            engine_b.i.payload.mask.eq(b_mask),
            engine_b.i.payload.lanes.eq(b_levels),
            engine_b.i.payload.last.eq(b_last),
            engine_b.i.payload.tag.eq(b_tag),
            out.i.valid.eq(engine_b.o.valid),
            engine_b.o.ready.eq(out.i.ready),
            out.i.payload.addr.eq(engine_b.o.payload.tag),
            out.i.payload.level.eq(engine_b.o.payload.lane),
            out.i.payload.last.eq(engine_b.o.payload.last),
        ]
        wiring.connect(m, out.o, wiring.flipped(self.events))
        return m
