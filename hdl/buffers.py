"""Streams in and out of the accelerator's buffers: the word reader and the dense event serializer.

A buffer (``compiler.hw.plan.Buffer``) is a memory of words ``token << group_bits | group``, each holding the
``lanes`` values of one lane group of one token. The engines read buffers with :class:`BufferReader` and
write them directly (a write port never stalls).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .cost import CoreCost
from .events import event_stream
from .event_queue import spike_word_layout
from .lanes import OutputQueue, field_width, index_bits

__all__ = ["BufferReader", "DenseEvents"]


def reader_layout(word_width: int, tokens: int, groups: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(word_width), "token": unsigned(field_width(tokens)),
                              "group": unsigned(field_width(groups)), "last": 1})


class BufferReader(wiring.Component):
    """Reads words ``(base + n) << group_bits | g`` for ``n < tokens``, ``g < groups``, in that order.

    A pulse on ``start`` begins a pass (``base`` is sampled then); ``busy`` is high until every word has
    been read (the last ones may still wait in the output queue). ``last`` is set on each token's final
    word (``frame="token"``) or on the pass's final word only (``frame="all"``). With ``mask_width``, a
    second memory (the sdsa1 mask: one word per group) is read alongside and lane ``l`` of the output is
    zeroed where bit ``l`` of the mask word is 0 (the lane values are ``value_width`` bits).

    Members
    -------
    start : In(1)
    base : In(base_width)
        Token offset of the pass (the time step's frame of the pixel buffer).
    busy : Out(1)
    addr : Out(addr_width), data : In(word_width)
        A memory read port (synchronous: data the cycle after the address).
    mask_addr : Out(group_bits), mask_data : In(mask_width)
        Only with ``mask_width``.
    o : Out(stream.Signature(reader_layout(word_width, tokens, groups)))
    """

    QUEUE_DEPTH = 4

    def __init__(self, *, tokens: int, groups: int, group_bits: int, word_width: int, frame: str,
                 base_width: int = 0, mask_width: int = 0, value_width: int = 1):
        assert frame in ("token", "all")
        self._tokens, self._groups, self._gb = tokens, groups, group_bits
        self._frame, self._mask_width, self._value_width = frame, mask_width, value_width
        self._word_width = word_width
        self.layout = reader_layout(word_width, tokens, groups)
        self.addr_width = max(1, group_bits + max(base_width, index_bits(tokens)) + 1)
        members = {
            "start": In(1),
            "base": In(max(1, base_width)),
            "busy": Out(1),
            "addr": Out(self.addr_width),
            "data": In(word_width),
            "o": Out(stream.Signature(self.layout)),
        }
        if mask_width:
            members["mask_addr"] = Out(max(1, group_bits))
            members["mask_data"] = In(mask_width)
        super().__init__(members)

    @property
    def words(self) -> int:
        """Words read per pass, one per cycle: ``tokens * groups``."""
        return self._tokens * self._groups

    def cost(self, name: str) -> CoreCost:
        """Its output queue (:mod:`hdl.cost`)."""
        return CoreCost("reader", name, {"word": self._word_width},
                        [OutputQueue.storage(f"{name}.queue", self.layout, self.QUEUE_DEPTH)])

    def elaborate(self, platform):
        m = Module()
        N, G, gb = self._tokens, self._groups, self._gb
        m.submodules.queue = queue = OutputQueue(self.layout, self.QUEUE_DEPTH)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        token = Signal(range(max(N, 2)))
        group = Signal(range(max(G, 2)))
        base = Signal.like(self.base)
        issue = Signal()
        m.d.comb += issue.eq(self.busy & queue.credit)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), token.eq(0), group.eq(0), base.eq(self.base)]
        with m.Elif(issue):
            with m.If(group == G - 1):
                m.d.sync += [group.eq(0), token.eq(token + 1)]
                with m.If(token == N - 1):
                    m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += group.eq(group + 1)

        row = Signal(self.addr_width)
        m.d.comb += [row.eq(base + token), self.addr.eq(Cat(group[:gb], row) if gb else row),
                     queue.accept.eq(issue)]
        last = (group == G - 1) & ((token == N - 1) if self._frame == "all" else 1)
        valid1, token1, group1, last1 = Signal(), Signal.like(token), Signal.like(group), Signal()
        m.d.sync += [valid1.eq(issue), token1.eq(token), group1.eq(group), last1.eq(last)]
        word = self.data
        if self._mask_width:
            m.d.comb += self.mask_addr.eq(group[:max(1, gb)] if gb else 0)
            w = self._value_width
            word = Cat(*(self.data[l * w:(l + 1) * w] & self.mask_data[l].replicate(w)
                         for l in range(self._word_width // w)))
        m.d.comb += [
            queue.w_en.eq(valid1),
            queue.w_data.data.eq(word),
            queue.w_data.token.eq(token1),
            queue.w_data.group.eq(group1),
            queue.w_data.last.eq(last1),
        ]
        return m


class DenseEvents(wiring.Component):
    """The dense baseline's replacement for :class:`hdl.event_queue.EventQueue`: one event per lane of
    every word, zeros included, so that every synapse is scheduled whether it spiked or not.

    Words of ``lanes`` levels (a frame's words numbered from 0) become events ``(word * lanes + lane,
    level)``, one per cycle; in each frame's word ``groups - 1, 2 * groups - 1, ..`` only the first
    ``last_lanes`` lanes exist (a token's last lane group). ``last`` goes on the frame's final event.
    """

    def __init__(self, *, lanes: int, level_width: int, addr_width: int, groups: int, last_lanes: int):
        self._lanes, self._groups, self._last_lanes = lanes, groups, last_lanes
        self._level_width, self._addr_width = level_width, addr_width
        super().__init__({
            "spikes": In(stream.Signature(spike_word_layout(lanes, level_width))),
            "events": Out(event_stream(addr_width, level_width)),
        })

    def cost(self, name: str) -> CoreCost:
        """The cost of the event queue it replaces (:meth:`hdl.event_queue.EventQueue.cost`)."""
        return CoreCost("events", name, {"lanes": self._lanes, "level_bits": self._lanes * self._level_width,
                                         "addr": self._addr_width})

    def elaborate(self, platform):
        m = Module()
        K, G = self._lanes, self._groups
        lane = Signal(range(max(K, 2)))
        group = Signal(range(max(G, 2)))
        addr = Signal.like(self.events.payload.addr)
        # the word's final lane: last_lanes - 1 in a token's last group, else K - 1
        final = Mux(group == G - 1, self._last_lanes - 1, K - 1)
        end = Signal()
        m.d.comb += end.eq(lane == final)
        levels = self.spikes.payload.levels
        ev = self.events.payload
        m.d.comb += [
            self.events.valid.eq(self.spikes.valid),
            ev.addr.eq(addr),
            ev.level.eq(levels[lane] if K > 1 else levels[0]),
            ev.last.eq(self.spikes.payload.last & end),
            self.spikes.ready.eq(self.events.ready & end),
        ]
        with m.If(self.events.valid & self.events.ready):
            m.d.sync += addr.eq(addr + 1)
            with m.If(end):
                m.d.sync += [lane.eq(0), group.eq(Mux(group == G - 1, 0, group + 1))]
                with m.If(self.spikes.payload.last):
                    m.d.sync += [addr.eq(0), group.eq(0)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
        return m
