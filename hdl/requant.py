"""Requantization (``ir.Requant``) and the saturating residual add (``ir.Add``) on P-lane streams.

Both are free-running pipelines that end in an :class:`hdl.lanes.OutputQueue` (see ``hdl/lanes.py`` for
the lane-stream conventions): one lane group per cycle.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .cost import CoreCost
from .ecp5 import check_ecp5, multiply, use_ecp5
from .lane_core import LaneCore, input_range, queue_beat
from .lanes import OutputQueue, _check_array, _check_int, index_bits, lane_layout, lane_rom, lane_rom_cost
from .packing import groups as _groups
from .packing import signed_width

__all__ = ["RequantUnit", "ResidualAdd", "MULT_WIDTH", "MAX_OPERAND_WIDTH"]

MULT_WIDTH = 18           # signed operand width of the ECP5's MULT18X18D
MAX_OPERAND_WIDTH = 35    # two multiplier limbs (17 unsigned + 18 signed bits), as the IR allows for multipliers


def _limbs(width: int) -> list[tuple[int, int, bool]]:
    """Split a signed ``width``-bit operand into (offset, width, signed) limbs that fit the multiplier.

    One signed limb if it fits; otherwise 17-bit unsigned limbs from the bottom (18 bits signed with a
    zero sign bit) and a signed top limb of at most 18 bits."""
    if width <= MULT_WIDTH:
        return [(0, width, True)]
    limbs = []
    offset = 0
    while width - offset > MULT_WIDTH:
        limbs.append((offset, MULT_WIDTH - 1, False))
        offset += MULT_WIDTH - 1
    limbs.append((offset, width - offset, True))
    return limbs


def _limb_value(value, limb):
    offset, width, is_signed = limb
    part = value[offset:offset + width]
    return part.as_signed() if is_signed else part


class RequantUnit(LaneCore):
    """``Y = sat((IN * mult[o] + bias[.., o] + half) >> shift)``, half = ``2**(shift-1)`` (0 if shift = 0).

    ``>>`` is an arithmetic shift (rounding half up); ``sat`` clamps to the signed ``saturate``-bit range,
    or is absent when ``saturate`` is None. The products use the ECP5's 18x18 signed multipliers
    (MULT18X18D): one per lane when ``in_width`` and the lane's multipliers fit 18 signed bits. A wider
    operand is split into 17-bit unsigned limbs and a signed top limb, one multiplier per pair of limbs,
    and only in the lanes that need it: a lane whose channels all have 18-bit multipliers keeps one
    multiplier even if another lane holds a 35-bit one. ``mult`` and ``bias`` live in read-only memories
    of one word per lane group (``bias [N, O]``: one word per token and group, addressed by
    ``Cat(group, token)``), or are constants when equal for every channel.

    Latency ``5 + ceil(log2(terms))`` cycles into the output FIFO, where ``terms`` is the widest lane's
    number of limb products plus one (the bias): 6 with 18-bit operands, 7 with one 35-bit multiplier.
    One beat per cycle. Lanes past ``O`` give 0.

    Parameters
    ----------
    lanes : int
        ``P``, channels per beat.
    in_width : int
        Signed width of the input values (at most 35).
    mult : array [O]
        Per-channel multipliers (at most 35 signed bits, as the IR allows).
    bias : array [O] or [N, O]
        Per-channel bias, or per token and channel (the stem's position bias).
    shift : int
        Rounding right shift.
    saturate : int or None
        Signed width of the clamp, or None for no clamp.
    tokens : int
        ``N``: tokens per frame (the width of ``token``; ``bias.shape[0]`` when it is ``[N, O]``).
    out_width : int, optional
        Signed width of the output values; by default ``saturate``, or without saturation the width of the
        output's range. It must hold the output range.
    in_range : (int, int), optional
        Inclusive range of the inputs, if narrower than ``in_width`` allows (narrows the adders).
    ecp5 : bool or "model", optional
        Build the products from MULT18X18D instances with their input and output registers on, and
        memories of at least ``BRAM_MIN_DEPTH`` words from DP16KD block RAMs with their output register
        (``hdl.ecp5.multiply``, ``hdl.lanes.lane_memory``); None (default) does so when elaborated for an ECP5
        platform; out-of-context synthesis (``bench.synth``) needs True; ``"model"`` simulates that
        structure with behavioural models.
    src_loc_at : int
        As for any Amaranth component.

    Members
    -------
    i : In(stream.Signature(in_layout))
        ``{group, token, values: Array(signed(in_width), P), last}``.
    o : Out(stream.Signature(out_layout))
        ``{group, token, values: Array(signed(out_width), P), last}``, in input order.
    """

    def __init__(self, *, lanes, in_width, mult, bias, shift, saturate, tokens, out_width=None, in_range=None,
                 ecp5=None, src_loc_at=0):
        self._ecp5 = check_ecp5(ecp5)
        self._lanes = _check_int("lanes", lanes, 1)
        self._in_width = _check_int("in_width", in_width, 1)
        if self._in_width > MAX_OPERAND_WIDTH:
            raise ValueError(f"in_width {self._in_width} needs more than two {MULT_WIDTH}-bit multiplier "
                             f"limbs; at most {MAX_OPERAND_WIDTH} bits are supported")
        self._shift = _check_int("shift", shift, 0, 61)
        self._tokens = _check_int("tokens", tokens, 1)
        if saturate is not None:
            saturate = _check_int("saturate", saturate, 1)
        self._saturate = saturate
        mult = _check_array("mult", mult, (1,))
        bias = _check_array("bias", bias, (1, 2))
        out = len(mult)
        if out == 0:
            raise ValueError("mult must have at least one channel, not shape (0,)")
        if bias.shape[-1] != out or (bias.ndim == 2 and bias.shape[0] != self._tokens):
            raise ValueError(f"bias shape {bias.shape} does not match {out} channels "
                             f"(expected ({out},) or ({self._tokens}, {out}))")
        mw = signed_width(int(mult.min()), int(mult.max()))
        if mw > MAX_OPERAND_WIDTH:
            raise ValueError(f"multiplier width {mw} needs more than two {MULT_WIDTH}-bit multiplier limbs; "
                             f"at most {MAX_OPERAND_WIDTH} bits are supported")
        ilo, ihi = input_range(self._in_width, in_range)

        half = (1 << self._shift) >> 1
        self._mult = mult
        self._bias = bias.reshape(-1, out) + half
        self._groups = _groups(out, self._lanes)
        # the sum's range, over every channel (padding lanes: mult 0, bias half)
        ends = [0, half]
        for o in range(out):
            blo, bhi = int(self._bias[:, o].min()), int(self._bias[:, o].max())
            for v in (ilo, ihi):
                ends += [v * int(mult[o]) + blo, v * int(mult[o]) + bhi]
        self._sum_range = (min(ends), max(ends))
        ylo, yhi = self._sum_range[0] >> self._shift, self._sum_range[1] >> self._shift
        if saturate is not None:
            slo, shi = -(1 << (saturate - 1)), (1 << (saturate - 1)) - 1
            self._clamp = (ylo < slo, yhi > shi, slo, shi)
            ylo, yhi = min(max(ylo, slo), shi), max(min(yhi, shi), slo)
        else:
            self._clamp = (False, False, 0, 0)
        self._out_range = (ylo, yhi)
        need = signed_width(ylo, yhi)
        if out_width is None:
            out_width = saturate if saturate is not None else need
        out_width = _check_int("out_width", out_width, 1)
        if out_width < need:
            raise ValueError(f"out_width {out_width} cannot hold the output range [{ylo}, {yhi}] "
                             f"({need} bits)")
        self._out_width = out_width

        # limbs per lane: a lane needs a wide multiplier only if one of its channels has one
        padded = np.zeros(self._groups * self._lanes, np.int64)
        padded[:out] = mult
        per_lane = padded.reshape(self._groups, self._lanes)
        self._lane_mult_width = [signed_width(int(per_lane[:, lane].min()), int(per_lane[:, lane].max()))
                                 for lane in range(self._lanes)]
        self._mult_width = mw
        self._bias_width = signed_width(int(self._bias.min()), int(self._bias.max()))
        self._terms = max(len(_limbs(self._in_width)) * len(_limbs(w)) for w in self._lane_mult_width) + 1
        self._tree_stages = (self._terms - 1).bit_length()
        self.latency = 5 + self._tree_stages
        self.queue_depth = self.latency + 4

        super().__init__(lane_layout(self._groups, self._tokens, self._lanes, "values", signed(self._in_width)),
                         lane_layout(self._groups, self._tokens, self._lanes, "values", signed(out_width)),
                         src_loc_at=1 + src_loc_at)

    @classmethod
    def from_op(cls, op, *, lanes: int, in_width: int, tokens: int, out_width=None, in_range=None, ecp5=None):
        """The unit for an ``ir.Requant`` op (read by attribute; ``hdl`` does not import the compiler)."""
        return cls(lanes=lanes, in_width=in_width, mult=op.mult, bias=op.bias, shift=op.shift,
                   saturate=op.saturate, tokens=tokens, out_width=out_width, in_range=in_range,
                   ecp5=ecp5, src_loc_at=1)

    @property
    def out_width(self) -> int:
        return self._out_width

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks the products need: one per pair of operand limbs, per lane that holds a channel
        (with ``O < P``, the padding lanes' products are never output, and synthesis removes them)."""
        return sum(len(_limbs(self._in_width)) * len(_limbs(w)) for w in self._lane_mult_width[:len(self._mult)])

    def cost(self, name: str) -> CoreCost:
        """The parameter ROMs, the output queue, the multipliers and the lanes' widths (:mod:`hdl.cost`)."""
        P = self._lanes
        roms = [lane_rom_cost(f"{name}.mult", [self._mult], self._mult_width, P),
                lane_rom_cost(f"{name}.bias", list(self._bias), self._bias_width, P)]
        memories = [rom for rom in roms if rom is not None]
        memories.append(OutputQueue.storage(f"{name}.queue", self.out_layout, self.queue_depth))
        return CoreCost("requant", name, {"lanes": P, "sum_bits": P * signed_width(*self._sum_range) * self._terms,
                                          "out_bits": P * self._out_width, "in_bits": P * self._in_width},
                        memories, self.multipliers)

    def elaborate(self, platform):
        m = Module()
        P = self._lanes
        ecp5 = use_ecp5(self._ecp5, platform)
        gbits, tbits = index_bits(self._groups), index_bits(self._tokens)
        sw = signed_width(*self._sum_range)
        bw = self._bias_width
        L = self.latency

        m.submodules.queue = queue = OutputQueue(self.out_layout, self.queue_depth)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        def stage(name, shape, value, reset_less=True):
            if isinstance(value, Const):
                return value
            reg = Signal(shape, name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        # R1, R2 carry the values; later stages only the beat's group, token and last
        tag_layout = data.StructLayout({name: self.in_layout[name].shape for name in ("group", "token", "last")})
        valid = [Signal(name="valid0")]
        meta = [self.i.payload]
        for k in range(1, L + 1):
            valid.append(stage(f"valid{k}", 1, valid[k - 1], reset_less=False))
            if k <= 2:
                meta.append(stage(f"meta{k}", self.in_layout, meta[k - 1]))
            else:
                tag = Signal(tag_layout, name=f"meta{k}", reset_less=True)
                m.d.sync += [getattr(tag, n).eq(getattr(meta[k - 1], n)) for n in ("group", "token", "last")]
                meta.append(tag)
        m.d.comb += [
            self.i.ready.eq(queue.credit),
            valid[0].eq(self.i.valid & self.i.ready),
            queue.accept.eq(valid[0]),
        ]

        # c0: read the multipliers and the biases (valid with R2)
        payload = self.i.payload
        mult2 = lane_rom(m, "mult", [self._mult], self._mult_width, P, payload.group[:gbits], ecp5)
        bias_addr = payload.group[:gbits] if len(self._bias) == 1 else Cat(payload.group[:gbits],
                                                                              payload.token[:tbits])
        bias2 = lane_rom(m, "bias", list(self._bias), bw, P, bias_addr, ecp5)

        clamp_lo, clamp_hi, slo, shi = self._clamp
        lane_limit = len(self._mult) - (self._groups - 1) * P      # lanes of the last group that exist
        results = []
        for lane in range(P):
            x2 = meta[2].values[lane]
            # R2 -> R4: one product per pair of limbs (registered operands, registered product)
            terms = []
            for xl in _limbs(self._in_width):
                for ml in _limbs(self._lane_mult_width[lane]):
                    prod = multiply(m, f"mul_{lane}_{xl[0]}_{ml[0]}", _limb_value(x2, xl),
                                         _limb_value(mult2[lane], ml), ecp5)
                    terms.append(prod if xl[0] + ml[0] == 0 else prod << (xl[0] + ml[0]))
            terms.append(stage(f"bias4_{lane}", signed(bw), stage(f"bias3_{lane}", signed(bw), bias2[lane])))
            # R4 -> R4+S: a registered adder tree, modulo 2**sw (the final sum fits, so it is exact)
            for level in range(self._tree_stages):
                pairs = [terms[j:j + 2] for j in range(0, len(terms), 2)]
                terms = [stage(f"sum{5 + level}_{lane}_{j}", signed(sw), sum(pair[1:], pair[0]))
                         for j, pair in enumerate(pairs)]
            total = terms[0]
            # R4+S -> R5+S: shift and saturate; y fits iff its bits above the clamp's sign bit all equal
            # that bit (an AND and an OR tree, not a compare), else it takes the end of its sign
            y = total.shift_right(self._shift) if self._shift else total
            if clamp_hi or clamp_lo:
                top = y[self._saturate - 1:]
                y = Mux(top.all() | ~top.any(), y[:self._saturate].as_signed(), Mux(y[-1], slo, shi))
            if lane >= lane_limit:
                y = Mux(meta[L - 1].group == self._groups - 1, 0, y)
            results.append(stage(f"y_{lane}", signed(self._out_width), y))

        m.d.comb += queue_beat(queue, valid[L], meta[L].group, meta[L].token, meta[L].last, results)
        return m


class ResidualAdd(wiring.Component):
    """Saturating add of two lane streams (``ir.Add``): ``Y = sat_width(A + B)``, lane by lane.

    The two inputs are joined: a beat is taken from both at once, when both are valid; the output's
    ``group``, ``token`` and ``last`` are ``a``'s (the two streams must come in the same order).
    Latency 2 cycles into the output FIFO, one beat per cycle.

    Parameters
    ----------
    lanes : int
        ``P``, channels per beat.
    channels : int
        ``O`` (sets the width of ``group``).
    tokens : int
        ``N`` (sets the width of ``token``).
    in_width : int
        Signed width of both inputs' values.
    width : int
        Signed width of the output (the clamp).

    Members
    -------
    a, b : In(stream.Signature(in_layout))
        ``{group, token, values: Array(signed(in_width), P), last}``: the residual and the branch.
    o : Out(stream.Signature(out_layout))
        ``{group, token, values: Array(signed(width), P), last}``.
    """

    LATENCY = 2
    QUEUE_DEPTH = LATENCY + 4

    def __init__(self, *, lanes, channels, tokens, in_width, width, src_loc_at=0):
        self._lanes = _check_int("lanes", lanes, 1)
        self._channels = _check_int("channels", channels, 1)
        self._tokens = _check_int("tokens", tokens, 1)
        self._in_width = _check_int("in_width", in_width, 1)
        self._width = _check_int("width", width, 1)
        self._groups = _groups(self._channels, self._lanes)
        self.in_layout = lane_layout(self._groups, self._tokens, self._lanes, "values", signed(self._in_width))
        self.out_layout = lane_layout(self._groups, self._tokens, self._lanes, "values", signed(self._width))
        super().__init__({
            "a": In(stream.Signature(self.in_layout)),
            "b": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        }, src_loc_at=1 + src_loc_at)

    @classmethod
    def from_op(cls, op, *, lanes: int, channels: int, tokens: int, in_width: int):
        """The unit for an ``ir.Add`` op (read by attribute)."""
        return cls(lanes=lanes, channels=channels, tokens=tokens, in_width=in_width, width=op.width, src_loc_at=1)

    @property
    def groups(self) -> int:
        return self._groups

    def cost(self, name: str) -> CoreCost:
        """The output queue and the lanes' width (:mod:`hdl.cost`). The queue is stated with entries of the
        inputs' width, as the estimator's models were fitted; its entries hold the output's, ``width``."""
        return CoreCost("add", name, {"lanes": self._lanes, "bits": self._lanes * self._in_width},
                        [OutputQueue.storage(f"{name}.queue", self.in_layout, self.QUEUE_DEPTH)])

    def elaborate(self, platform):
        m = Module()
        P = self._lanes
        m.submodules.queue = queue = OutputQueue(self.out_layout, self.QUEUE_DEPTH)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        fire = Signal()
        m.d.comb += [
            self.a.ready.eq(queue.credit & self.b.valid),
            self.b.ready.eq(queue.credit & self.a.valid),
            fire.eq(self.a.valid & self.b.valid & queue.credit),
            queue.accept.eq(fire),
        ]
        valid1, valid2 = Signal(), Signal()
        meta1 = Signal(self.in_layout, reset_less=True)
        meta2 = Signal(self.in_layout, reset_less=True)
        m.d.sync += [valid1.eq(fire), valid2.eq(valid1), meta1.eq(self.a.payload), meta2.eq(meta1)]

        slo, shi = -(1 << (self._width - 1)), (1 << (self._width - 1)) - 1
        top = (1 << self._in_width) - 1          # |A + B| reaches 2**in_width: clamps only if width is narrower
        results = []
        for lane in range(P):
            s1 = Signal(signed(self._in_width + 1), name=f"sum1_{lane}", reset_less=True)
            m.d.sync += s1.eq(self.a.payload.values[lane] + self.b.payload.values[lane])
            y = s1
            if top > shi:
                y = Mux(s1 > shi, shi, y)
            if -top - 1 < slo:
                y = Mux(s1 < slo, slo, y)
            y2 = Signal(signed(self._width), name=f"y2_{lane}", reset_less=True)
            m.d.sync += y2.eq(y)
            results.append(y2)

        m.d.comb += queue_beat(queue, valid2, meta2.group, meta2.token, meta2.last, results)
        return m
