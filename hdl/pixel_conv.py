"""The stem for direct encoding (``ir.PatchConv``): patch convolution of uint8 pixels or binary event frames.

See ``hdl/lanes.py`` for the lane-stream conventions of the output.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from .cost import CoreCost
from .ecp5 import check_ecp5, multiply, use_ecp5
from .lane_core import LaneCore, queue_beat
from .lanes import OutputQueue, _check_array, _check_int, index_bits, lane_layout, lane_memory, lane_memory_cost
from .packing import groups as _groups
from .packing import pack_weights, signed_width

__all__ = ["PatchConvUnit", "MULTIPLIERS"]

MULTIPLIERS = ("auto", "dsp", "lut")


class PatchConvUnit(LaneCore):
    """``ACC[n, o] = sum_{c,dy,dx} W[o, c, dy, dx] * X[c, py*p+dy, px*p+dx]`` for one image or event frame.

    Input: one pixel per beat, token after token in patch order (token ``n = py * (W/p) + px``; within a
    token the ``I = C*p*p`` pixels in ``(c, dy, dx)`` order, i.e. ``X[c, py*p+dy, px*p+dx]`` at index
    ``(c*p + dy)*p + dx``), with ``last`` set on the final pixel of each token. The unit counts tokens
    itself (``0..N-1``, then again from 0 for the next image or frame).

    Output: for each token, its ``O`` accumulators as ``G = ceil(O/P)`` lane groups in group order; ``last``
    is set on the final group of token ``N-1`` (the end of a frame). An image's accumulators are computed
    once; repeating them over ``T`` time steps is the consumer's business. Event frames (pixels 0/1,
    ``pixel_bits=1``) use the same datapath, one frame after another.

    Datapath: the pixels of a token go into one half of a double buffer while the other half's token is
    computed, one lane group at a time: ``I`` cycles per group, each reading one weight word (``P``
    lanes, ``hdl.packing.pack_weights(W.reshape(O, -1), bits, P)``, word ``g*I + i``) and one pixel, and
    adding ``P`` products into ``P`` accumulators. Throughput: one token per ``G*I`` cycles (the input
    is taken at one pixel per ``G`` cycles on average, the next token's pixels while this one computes);
    a group enters the output FIFO ``I + 4`` cycles after its first pixel is read (weights and pixel two
    cycles, product two, accumulate one).

    The products use one ECP5 multiplier (MULT18X18D) per lane (``multiplier="dsp"``), or LUT shift-and-add
    over the weight's bits (``"lut"``: partial products registered, then summed). ``"auto"`` picks the
    multiplier: measured out of context on the LFE5U-85F (C = 1, p = 2, O = 32, P = 16, ``ecp5=True``),
    "dsp" took 1,011 / 1,079 / 1,364 LUT4 and 16 MULT18X18D at 199 / 206 / 181 MHz for 2 / 4 / 8-bit
    weights, "lut" 1,614 / 2,286 / 4,989 LUT4 at 196 / 140 / 116 MHz. "lut" is there for builds short of
    multipliers. Binary event frames need no multiplier at all (the pixel selects the weight or 0).

    Parameters
    ----------
    weight : array [O, C, p, p]
        Signed ``bits``-bit weights.
    bits : int
        Weight width (2..17).
    lanes : int
        ``P``, output channels per group.
    tokens : int
        ``N``, patches per image (or frame).
    pixel_bits : int
        8 for uint8 images, 1 for binary event frames.
    multiplier : str
        ``"auto"``, ``"dsp"`` or ``"lut"`` (binary events always use the selection, no multiplier).
    ecp5 : bool or "model", optional
        Build the products from registered MULT18X18D instances and memories of at least
        ``BRAM_MIN_DEPTH`` words (weights, pixel buffer) from DP16KD block RAMs with their output register
        (``hdl.ecp5.multiply``, ``hdl.lanes.lane_memory``); None (default) does so when elaborated for an ECP5
        platform; out-of-context synthesis (``bench.synth``) needs True; ``"model"`` simulates that
        structure with behavioural models.
    src_loc_at : int
        As for any Amaranth component.

    Attributes
    ----------
    acc_width : int
        Signed width of the output values: the exact range of ``ACC`` over the weights and pixel range.

    Members
    -------
    i : In(stream.Signature(in_layout))
        ``{pixel: unsigned(pixel_bits), last}``.
    o : Out(stream.Signature(out_layout))
        ``{group, token, values: Array(signed(acc_width), P), last}``.
    """

    LATENCY = 5

    def __init__(self, *, weight, bits, lanes, tokens, pixel_bits=8, multiplier="auto", ecp5=None, src_loc_at=0):
        self._ecp5 = check_ecp5(ecp5)
        weight = _check_array("weight", weight, (4,))
        out, c, p, p2 = weight.shape
        if out == 0 or c == 0 or p == 0 or p != p2:
            raise ValueError(f"weight must have shape [O, C, p, p] with O, C, p >= 1, not {weight.shape}")
        self._bits = _check_int("bits", bits, 2, 17)
        lo, hi = -(1 << (self._bits - 1)), (1 << (self._bits - 1)) - 1
        if weight.min() < lo or weight.max() > hi:
            raise ValueError(f"weights outside the signed {self._bits}-bit range [{lo}, {hi}]")
        self._lanes = _check_int("lanes", lanes, 1)
        self._tokens = _check_int("tokens", tokens, 1)
        self._pixel_bits = _check_int("pixel_bits", pixel_bits, 1, 17)
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, not {multiplier!r}")
        if self._pixel_bits == 1:
            multiplier = "lut"             # a 1-bit pixel selects the weight or 0: no multiplier at all
        elif multiplier == "auto":
            multiplier = "dsp"             # fewer LUTs and a higher Fmax than "lut" for every weight width
        self._multiplier = multiplier
        self._weight = weight.reshape(out, -1)
        self._fan_in = self._weight.shape[1]
        self._out = out
        self._groups = _groups(out, self._lanes)
        # the accumulator's exact range (pixels in [0, max]); every partial sum lies within it
        top = (1 << self._pixel_bits) - 1
        pos = np.clip(self._weight, 0, None).sum(1)
        neg = np.clip(self._weight, None, 0).sum(1)
        self._acc_range = (min(0, int(neg.min()) * top), max(0, int(pos.max()) * top))
        self.acc_width = signed_width(*self._acc_range)

        super().__init__(data.StructLayout({"pixel": unsigned(self._pixel_bits), "last": 1}),
                         lane_layout(self._groups, self._tokens, self._lanes, "values", signed(self.acc_width)),
                         src_loc_at=1 + src_loc_at)

    @classmethod
    def from_op(cls, op, *, lanes: int, tokens: int, pixel_bits: int = 8, multiplier: str = "auto", ecp5=None):
        """The unit for an ``ir.PatchConv`` op (read by attribute; ``hdl`` does not import the compiler)."""
        return cls(weight=op.weight, bits=op.bits, lanes=lanes, tokens=tokens, pixel_bits=pixel_bits,
                   multiplier=multiplier, ecp5=ecp5, src_loc_at=1)

    @property
    def fan_in(self) -> int:
        """``I = C*p*p``, pixels per token."""
        return self._fan_in

    @property
    def multiplier(self) -> str:
        """The multiplier actually built: ``"dsp"`` or ``"lut"``."""
        return self._multiplier

    @property
    def queue_depth(self) -> int:
        """Entries of the output queue: ``ceil((I + LATENCY + 3) / I) + 2``."""
        return -(-(self._fan_in + self.LATENCY + 3) // self._fan_in) + 2

    @property
    def _pixel_depth(self) -> int:
        """Words of the pixel double buffer: two halves of ``2**index_bits(I)``."""
        return 2 << index_bits(self._fan_in)

    def frame_cycles(self) -> int:
        """Cycles of a frame of ``N`` tokens, pixels offered one per cycle: the first token's ``I`` pixels,
        then ``G * I`` per token."""
        return self._fan_in + self._tokens * self._groups * self._fan_in

    def cost(self, name: str) -> CoreCost:
        """The weight memory, the pixel double buffer, the output queue, the multipliers (one per lane with
        ``"dsp"``) and the lanes' width (:mod:`hdl.cost`)."""
        P, dsp = self._lanes, self._multiplier == "dsp"
        memories = [lane_memory_cost(f"{name}.weights", width=P * self._bits, depth=self._groups * self._fan_in,
                                     rom=True),
                    lane_memory_cost(f"{name}.pixels", width=self._pixel_bits, depth=self._pixel_depth),
                    OutputQueue.storage(f"{name}.queue", self.out_layout, self.queue_depth)]
        return CoreCost("pixel_conv", name, {"lanes": P, "acc_bits": P * self.acc_width,
                                             "lut_mult_bits": 0 if dsp else P * self._bits * self._pixel_bits},
                        memories, P if dsp else 0)

    def _partial_products(self, x, w) -> list:
        """``x * w`` as terms to add: the weight where a 1-bit pixel is set, or for wider pixels the shifted
        pixel where a weight bit is set (the top bit weighs ``-2**(bits-1)``)."""
        if self._pixel_bits == 1:
            return [Mux(x[0], w, 0)]
        parts = [Mux(w[j], x << j, 0) for j in range(self._bits - 1)]
        return parts + [-Mux(w[self._bits - 1], x << (self._bits - 1), 0)]

    def elaborate(self, platform):
        m = Module()
        P, G, N, I = self._lanes, self._groups, self._tokens, self._fan_in
        ibits = index_bits(I)

        ecp5 = use_ecp5(self._ecp5, platform)
        m.submodules.queue = queue = OutputQueue(self.out_layout, self.queue_depth)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        # double-buffered pixels of one token: half `sel` at addresses Cat(index, sel)
        full = Signal(2)
        wsel = Signal()
        widx = Signal(range(I))
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(~Mux(wsel, full[1], full[0])),
            take.eq(self.i.valid & self.i.ready),
        ]
        with m.If(take):
            with m.If(self.i.payload.last):
                m.d.sync += [widx.eq(0), wsel.eq(~wsel)]
            with m.Else():
                m.d.sync += widx.eq(widx + 1)

        # sequencer: for each full half, for each group, for each pixel
        rsel = Signal()
        group = Signal(range(G))
        index = Signal(range(I))
        waddr = Signal(range(G * I))
        token = Signal(range(N))
        start = index == 0
        issue = Signal()
        done = Signal()                  # the token's last issue: its half may be refilled
        m.d.comb += [
            issue.eq(Mux(rsel, full[1], full[0]) & (~start | queue.credit)),
            queue.accept.eq(issue & start),
            done.eq(issue & (index == I - 1) & (group == G - 1)),
        ]
        with m.If(issue):
            with m.If(index == I - 1):
                m.d.sync += index.eq(0)
                with m.If(group == G - 1):
                    m.d.sync += [group.eq(0), waddr.eq(0), rsel.eq(~rsel),
                                 token.eq(Mux(token == N - 1, 0, token + 1))]
                with m.Else():
                    m.d.sync += [group.eq(group + 1), waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += [index.eq(index + 1), waddr.eq(waddr + 1)]
        for half in range(2):
            with m.If(take & self.i.payload.last & (wsel == half)):
                m.d.sync += full[half].eq(1)
            with m.If(done & (rsel == half)):
                m.d.sync += full[half].eq(0)

        # memories, read two cycles after the issue: the weights (word g*I + i) and the pixel
        words = pack_weights(self._weight, self._bits, P)
        w2 = data.ArrayLayout(signed(self._bits), P)(lane_memory(
            m, "weights", width=P * self._bits, depth=len(words), read_addr=waddr, init=words, ecp5=ecp5))
        x2 = lane_memory(m, "pixels", width=self._pixel_bits, depth=self._pixel_depth,
                         read_addr=Cat(index[:ibits], rsel),
                         write=(Cat(widx[:ibits], wsel), self.i.payload.pixel, take), ecp5=ecp5)

        # pipeline: c0 issue -> R2 (memory outputs) -> R4 products -> R5 accumulators
        ctrl_layout = data.StructLayout({"valid": 1, "first": 1, "close": 1, "group": range(G), "token": range(N),
                                         "frame_last": 1})
        ctrl = [Signal(ctrl_layout, name="ctrl0")]
        m.d.comb += [
            ctrl[0].valid.eq(issue), ctrl[0].first.eq(start), ctrl[0].close.eq(index == I - 1),
            ctrl[0].group.eq(group), ctrl[0].token.eq(token),
            ctrl[0].frame_last.eq((group == G - 1) & (token == N - 1)),
        ]
        for k in range(1, self.LATENCY + 1):
            ctrl.append(Signal(ctrl_layout, name=f"ctrl{k}"))
            m.d.sync += ctrl[k].eq(ctrl[k - 1])

        accs = []
        for lane in range(P):
            if self._multiplier == "dsp":
                p4 = multiply(m, f"mul_{lane}", x2, w2[lane], ecp5)
            else:
                # R3: the partial products (the pixel where a weight bit is set); R4: their sum
                parts = self._partial_products(x2, w2[lane])
                regs = []
                for j, part in enumerate(parts):
                    reg = Signal(part.shape(), name=f"part3_{lane}_{j}", reset_less=True)
                    m.d.sync += reg.eq(part)
                    regs.append(reg)
                prod = sum(regs[1:], regs[0])
                p4 = Signal(prod.shape(), name=f"prod4_{lane}", reset_less=True)
                m.d.sync += p4.eq(prod)
            acc = Signal(signed(self.acc_width), name=f"acc5_{lane}", reset_less=True)
            with m.If(ctrl[4].valid):
                m.d.sync += acc.eq(Mux(ctrl[4].first, 0, acc) + p4)
            accs.append(acc)

        last = ctrl[self.LATENCY]
        m.d.comb += queue_beat(queue, last.valid & last.close, last.group, last.token, last.frame_last, accs)
        return m
