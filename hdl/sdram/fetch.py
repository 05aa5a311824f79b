"""Fetch: copy a run of consecutive SDRAM words into an on-chip memory, packing them into wider words.

The weight store's words are wider than the SDRAM's (a 16-lane store of 4-bit weights has 64-bit words, the
ULX3S's SDRAM 16-bit ones): :class:`Fetch` reads ``count * ratio`` consecutive SDRAM words from ``src`` (the
first into the low bits) and writes ``count`` wide words from ``dst`` on, through a write port; ``ratio`` is
set per fetch (the overlay's parameter memories have rows of other widths than its weight store). It is the
SDRAM side of weight streaming: the controller (``hdl.sdram.litedram.SdramController``) serves its reads.

Cost: after ``start``, the reads go out one a cycle while the controller takes them; a wide word is written
the cycle after its last SDRAM word arrives, and ``done`` rises the cycle after the last write. With a
controller that answers every cycle, a fetch takes :func:`fetch_cycles` cycles; with the real controller,
about ``count * ratio / STREAM_WORDS_PER_CYCLE`` plus its read latency.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Fetch", "fetch_cycles"]


def fetch_cycles(count: int, ratio: int, latency: int) -> int:
    """Cycles from ``start`` to ``done`` for ``count`` wide words of ``ratio`` SDRAM words each, from a
    controller that takes a read every cycle and returns each word ``latency`` cycles after taking its read
    (``latency`` >= 1), with the reader always ready: the reads leave one a cycle from the cycle after
    ``start``, the last word arrives ``latency`` cycles after the last read, the last write follows it and
    ``done`` the write. A fetch of 0 words takes 2 cycles."""
    if count == 0:
        return 2
    return 1 + count * ratio + latency + 1


class Fetch(wiring.Component):
    """Copy ``count`` words (rows) of ``ratio`` SDRAM words each (the first in the low bits; ``ratio`` up to
    ``ceil(word_bits / sdram_bits)``, set per fetch) from SDRAM word address ``src`` to memory word ``dst``
    onward.

    Members
    -------
    start : In(1)
        Latch ``src``, ``dst``, ``count`` and ``ratio`` and begin (ignored while busy).
    src : In(address_bits); dst : In(range(depth)); count : In(range(depth + 1)); ratio : In(range(1, max + 1))
        The fetch.
    busy, done : Out(1)
        Fetching; the last fetch finished (until the next ``start``).
    cmd : Out(stream.Signature(StructLayout({"we": 1, "addr": address_bits})))
        Read commands to the SDRAM controller (``we`` always 0).
    rdata : In(stream.Signature(sdram_bits))
        The controller's read data, in order.
    w_en, w_addr, w_data : Out
        The memory's write port (``w_data``'s bits past ``ratio * sdram_bits`` are stale).
    """

    def __init__(self, word_bits: int, depth: int, *, sdram_bits: int = 16, address_bits: int = 24):
        for name, value in (("word_bits", word_bits), ("depth", depth), ("sdram_bits", sdram_bits),
                            ("address_bits", address_bits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._word_bits, self._depth, self._sdram_bits = word_bits, depth, sdram_bits
        self.max_ratio = -(-word_bits // sdram_bits)
        super().__init__({
            "start": In(1), "src": In(address_bits), "dst": In(range(depth)), "count": In(range(depth + 1)),
            "ratio": In(range(1, self.max_ratio + 1), init=self.max_ratio),
            "busy": Out(1), "done": Out(1),
            "cmd": Out(stream.Signature(data.StructLayout({"we": 1, "addr": address_bits}))),
            "rdata": In(stream.Signature(sdram_bits)),
            "w_en": Out(1), "w_addr": Out(range(depth)), "w_data": Out(word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        R, S = self.max_ratio, self._sdram_bits
        last = Signal(range(R))                     # ratio - 1 of this fetch
        send_rows = Signal(range(self._depth + 1))  # rows whose reads are not all taken by the controller
        send_part = Signal(range(R))
        take_rows = Signal(range(self._depth + 1))  # rows not yet arrived
        inflight = Signal(range(self._depth * R + 1))   # reads taken whose words have not arrived
        addr = Signal.like(self.src)
        dst = Signal(range(self._depth))
        part = Signal(range(R))                     # the next word's place in the row
        packed = Signal(R * S)

        # a word is taken only for a read already sent (so a stray word cannot end the fetch early)
        sent, took = Signal(), Signal()
        m.d.comb += [self.cmd.valid.eq(self.busy & (send_rows != 0)), self.cmd.payload.we.eq(0),
                     self.cmd.payload.addr.eq(addr), self.rdata.ready.eq(self.busy & (inflight != 0)),
                     sent.eq(self.cmd.valid & self.cmd.ready), took.eq(self.rdata.valid & self.rdata.ready)]
        with m.If(sent):
            m.d.sync += [send_part.eq(send_part + 1), addr.eq(addr + 1)]
            with m.If(send_part == last):
                m.d.sync += [send_part.eq(0), send_rows.eq(send_rows - 1)]
        m.d.sync += inflight.eq(inflight + sent - took)

        m.d.sync += self.w_en.eq(0)
        with m.If(took):
            whole = Signal(R * S)
            m.d.comb += whole.eq(packed)
            m.d.comb += whole.word_select(part, S).eq(self.rdata.payload)
            m.d.sync += [packed.eq(whole), part.eq(part + 1)]
            with m.If(part == last):
                m.d.sync += [part.eq(0), self.w_en.eq(1), self.w_addr.eq(dst), self.w_data.eq(whole),
                             dst.eq(dst + 1), take_rows.eq(take_rows - 1)]

        with m.If(self.busy & (take_rows == 0)):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), addr.eq(self.src), dst.eq(self.dst), part.eq(0),
                         send_part.eq(0), last.eq(self.ratio - 1), send_rows.eq(self.count),
                         take_rows.eq(self.count)]
        return m
