"""P-lane streams: the layouts, parameter memories and output queue shared by the lane-group cores
(:mod:`hdl.neuron`, :mod:`hdl.requant`, :mod:`hdl.pixel_conv`).

Lane streams
------------
Every lane-group core takes and gives *lane groups*: one beat carries ``P`` channels ``g*P .. g*P+P-1`` of
one token, as a ``data.StructLayout`` with ``group`` (``unsigned(field_width(G))``, ``G = ceil(O / P)``),
``token`` (``unsigned(field_width(N))``), ``values`` (``ArrayLayout(shape, P)``) and ``last`` (end of a
frame; the cores pass it through). Lanes past ``O`` in the last group are padding.

Pipelines
---------
The cores are free-running pipelines (no stall inside) that end in an :class:`OutputQueue`: a FIFO and an
occupancy counter. A beat enters only while the queue has room for everything already in flight, so the
pipeline never needs to stop and no wide enable fans out to its registers; ``ready`` is a compare on a small
counter. With ``o.ready`` held high every core takes one beat per cycle.

Memories
--------
Every memory read (:func:`lane_memory`, :func:`lane_rom`) takes two cycles; with ``ecp5`` the deeper
memories are DP16KD block RAMs whose own registers fill them (:func:`hdl.ecp5.block_ram`).
:func:`lane_memory_cost`, :func:`lane_rom_cost` and :meth:`OutputQueue.storage` describe these memories for
the cores' costs (:mod:`hdl.cost`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .cost import Memory
from .ecp5 import block_ram
from .packing import groups as _groups
from .packing import pack_weights

__all__ = ["OutputQueue", "StreamSlice", "field_width", "index_bits", "lane_layout", "lane_memory", "lane_rom",
           "lane_memory_cost", "lane_rom_cost", "BRAM_MIN_DEPTH"]


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
"""With ``ecp5``, lane memories at least this deep are built from DP16KD block RAMs; shallower ones stay Amaranth
memories (yosys makes them LUT RAM or LUT logic, which is cheaper and fast)."""

def lane_memory(m: Module, name: str, *, width: int, depth: int, read_addr, init=(), write=None, ecp5=False):
    """A memory of ``depth`` words of ``width`` bits; returns the read data, **two cycles** after ``read_addr``.

    ``write`` is ``(addr, data, en)`` or None (a ROM of ``init``). With ``ecp5`` (``True`` or ``"model"``,
    resolved by :func:`hdl.ecp5.use_ecp5`) and at least ``BRAM_MIN_DEPTH`` words, DP16KD block RAMs with
    their output registers; otherwise an Amaranth memory and a register (:func:`hdl.ecp5.block_ram`). A
    write and a read of the same word in the same cycle are not allowed (the cores never do that).
    """
    return block_ram(m, name, width=width, depth=depth, read_addr=read_addr, init=init, write=write,
                     ecp5=ecp5 if depth >= BRAM_MIN_DEPTH else False)


def lane_memory_cost(name: str, *, width: int, depth: int, rom: bool = False) -> Memory:
    """The memory that :func:`lane_memory` builds on an ECP5 (DP16KD tiles from ``BRAM_MIN_DEPTH`` words on),
    a ROM of initial contents if ``rom``."""
    return Memory(name, width, depth, "primitive" if depth >= BRAM_MIN_DEPTH else "yosys", rom=rom, init=rom)


def lane_rom_cost(name: str, rows: list[np.ndarray], width: int, lanes: int) -> Memory | None:
    """The memory that :func:`lane_rom` builds for these arguments: ``len(rows) * 2**index_bits(G)`` words,
    or None for a parameter that is the same everywhere (constants)."""
    flat = np.concatenate(rows)
    if (flat == flat[0]).all():
        return None
    depth = len(rows) << index_bits(_groups(len(rows[0]), lanes))
    return lane_memory_cost(name, width=lanes * width, depth=depth, rom=True)


def lane_rom(m: Module, name: str, rows: list[np.ndarray], width: int, lanes: int, addr, ecp5=False) -> list:
    """A read-only memory of lane-group words, one word per (row, group), and its ``P`` lane outputs.

    ``rows`` are per-channel vectors ``[O]`` (several for a per-token parameter); word
    ``r * 2**index_bits(G) + g`` holds row ``r``'s group ``g`` in the layout of
    ``hdl.packing.pack_weights`` (lane ``l`` in bits ``[l*width, (l+1)*width)``), so ``addr`` is
    ``Cat(group, row)``. The outputs are valid **two cycles** after ``addr`` (see :func:`lane_memory`). A
    parameter that is the same in every row and channel needs no memory: the outputs are then constants.
    """
    memory = lane_rom_cost(name, rows, width, lanes)
    if memory is None:
        return [Const(int(rows[0][0]), signed(width))] * lanes
    g = _groups(len(rows[0]), lanes)
    stride = 1 << index_bits(g)
    words = []
    for row in rows:
        packed = pack_weights(np.asarray(row).reshape(-1, 1), width, lanes)
        words += packed + [0] * (stride - g)
    word = lane_memory(m, name, width=memory.width, depth=memory.depth, read_addr=addr, init=words, ecp5=ecp5)
    view = data.ArrayLayout(signed(width), lanes)(word)
    return [view[lane] for lane in range(lanes)]

#: Bits that an output queue's stated storage (:meth:`OutputQueue.storage`) has beyond an entry: the
#: estimator's LUT4/FF models were fitted with the storage counted that much wider (its write register's
#: enable and the credit's ``accepted`` flip-flop with it); the FIFO holds entries of the layout's width.
QUEUE_COST_EXTRA_BITS = 2


class OutputQueue(wiring.Component):
    """The end of a free-running pipeline: an output FIFO and the credit that keeps it from overflowing.

    The pipeline asserts ``accept`` in each cycle in which work that will produce one output entry enters
    it; ``credit`` says whether that may happen in this cycle (the entries accepted and not yet taken from
    ``o`` are fewer than ``depth``). ``w_en``/``w_data`` write a result into the FIFO, which the credit
    guarantees has room.

    The write goes through a register first (a result reaches ``o`` two cycles after ``w_en`` at the
    earliest), and the FIFO has one entry more than ``depth`` to keep the rate: on a board the pipeline's
    last stage (a multiplier, a memory read port) can sit far from the consumer, and the register lets the
    FIFO's storage stay beside its level counter (measured on the ECP5: the write enable's loop through
    the level counter, stretched across the die, limited the accelerator to 91 MHz).

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
        self._width = Shape.cast(layout).width
        super().__init__({
            "accept": In(1),
            "credit": Out(1),
            "w_en": In(1),
            "w_data": In(layout),
            "o": Out(stream.Signature(layout)),
        })

    @staticmethod
    def storage(name: str, layout, depth: int) -> Memory:
        """The FIFO's storage in an ``OutputQueue(layout, depth)``: ``depth`` entries (its FIFO's ``depth + 1``
        less the output register), stated :data:`QUEUE_COST_EXTRA_BITS` wider than an entry."""
        return Memory(name, Shape.cast(layout).width + QUEUE_COST_EXTRA_BITS, depth, fifo=True)

    def elaborate(self, platform):
        m = Module()
        depth = self._depth + 1                  # one entry for the write register's cycle
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._width, depth=depth)
        # the entries accepted before the previous cycle and not yet taken, and the previous cycle's
        # accept: the credit is a function of registers only (accept does not reach the counter's adder)
        occupancy = Signal(range(depth + 1))
        accepted = Signal()
        pop = fifo.r_rdy & self.o.ready
        m.d.sync += [accepted.eq(self.accept), occupancy.eq(occupancy + accepted - pop),
                     fifo.w_en.eq(self.w_en), fifo.w_data.eq(self.w_data.as_value())]
        m.d.comb += [
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
            self.credit.eq(Mux(accepted, occupancy < depth - 1, occupancy < depth)),
        ]
        return m


class StreamSlice(wiring.Component):
    """A register slice for a stream whose two ends are far apart: ``i.ready`` is a register (a two-entry
    skid buffer), so the consumer's ``ready`` never reaches the producer combinationally. Full rate.

    With ``latency=1`` (the default) ``o`` is driven from registers too, so neither direction has a
    combinational path through it, and a beat leaves one cycle after it enters. With ``latency=0`` a
    beat passes in the cycle it arrives (``o`` is ``i``, or the beat held while ``o`` was stalled, one
    multiplexer), which only cuts the ``ready`` path: the consumer sees the same beats in the same cycles
    as without the slice, and the producer sees ``ready`` one cycle late after a stall.

    Parameters
    ----------
    layout : data.Layout
        The payload of both streams.
    latency : int
        0 or 1 (see above).

    Members
    -------
    i : In(stream.Signature(layout))
    o : Out(stream.Signature(layout))
    """

    def __init__(self, layout, *, latency: int = 1):
        if latency not in (0, 1):
            raise ValueError(f"latency must be 0 or 1, not {latency!r}")
        self.latency = latency
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.i.payload.shape()).width
        skid, skid_valid = Signal(width), Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        take = self.i.valid & ~skid_valid
        if self.latency == 0:
            m.d.comb += [self.o.valid.eq(skid_valid | self.i.valid),
                         self.o.payload.eq(Mux(skid_valid, skid, Value.cast(self.i.payload)))]
            with m.If(self.o.ready):
                m.d.sync += skid_valid.eq(0)
            with m.Elif(take):                          # the beat waits in the skid register
                m.d.sync += [skid.eq(Value.cast(self.i.payload)), skid_valid.eq(1)]
            return m
        main, main_valid = Signal(width), Signal()
        m.d.comb += [self.o.valid.eq(main_valid), self.o.payload.eq(main)]
        with m.If(~main_valid | self.o.ready):          # the output register is free this cycle
            with m.If(skid_valid):
                m.d.sync += [main.eq(skid), main_valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [main.eq(Value.cast(self.i.payload)), main_valid.eq(take)]
        with m.Elif(take):                              # the output waits: the beat goes to the skid register
            m.d.sync += [skid.eq(Value.cast(self.i.payload)), skid_valid.eq(1)]
        return m
