"""Multi-threshold LIF neuron for P lanes (``ir.Neuron``).

A lane-group core (:mod:`hdl.lanes`: its streams, parameter memories and output queue); with ``ecp5`` its
deeper memories are DP16KD block RAMs with their output registers (:mod:`hdl.ecp5`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring

from .cost import CoreCost
from .ecp5 import check_ecp5, use_ecp5
from .lane_core import LaneCore, input_range, queue_beat
from .lanes import (OutputQueue, _check_array, _check_int, index_bits, lane_layout, lane_memory, lane_memory_cost,
                    lane_rom, lane_rom_cost)
from .packing import groups as _groups
from .packing import signed_width

__all__ = ["NeuronUnit"]


def _thermometer_count(ge: list) -> Value:
    """The number of ones of a thermometer code (``ge[k]`` implies ``ge[k-1]``: thresholds are sorted),
    as a few LUTs per output bit rather than an adder: bit ``j`` is set where the code ends at a count
    with bit ``j`` set."""
    ends = [ge[k] & ~ge[k + 1] if k + 1 < len(ge) else ge[k] for k in range(len(ge))]   # count == k + 1
    width = len(ge).bit_length()
    bits = []
    for j in range(width):
        terms = [ends[k] for k in range(len(ge)) if (k + 1) >> j & 1]
        bits.append(Cat(*terms).any() if terms else Const(0, 1))
    return Cat(*bits)


# -- the neuron -------------------------------------------------------------------------------------

class NeuronUnit(LaneCore):
    """Multi-threshold LIF neuron (``ir.Neuron``, docs/semantics.md) on ``P`` lanes, one lane group per cycle.

    Per channel ``o``: ``X = sign*(IN << frac) + bias``, ``H = V - (V >> leak_shift) + X``,
    ``level = #{k : H >= theta[o, k]}``, ``V = H if level == 0 else 0``; ``V`` is taken as 0 on a beat
    with ``first`` set (the first time step). Only adders and comparators: no multiplier.

    The membrane ``V`` lives in a memory of ``N * 2**index_bits(G)`` words of ``P`` lanes, addressed by
    ``Cat(group, token)``; it is read when a beat enters and written when it leaves. In one time step each
    ``(token, group)`` must come once (in any order); a beat whose ``(token, group)`` is still in the
    pipeline from the previous step waits until that one has written its membrane (this costs cycles
    only when ``N * G`` is below the pipeline depth, 7, or when beats come out of order: the check
    compares the group and the token's low bits only, so it may stall needlessly, never too little).
    ``sign``, ``bias`` and each threshold column live in read-only memories of one word per lane group,
    unless equal for every channel (then they are constants: the residual-stream neurons need no
    parameter memory). The widths are derived from the parameters and the input range and lie within
    the IR's ``membrane_range``; thresholds are clamped into ``[min H, max H + 1]``, which changes no
    comparison.

    Pipeline (``Rk`` is the k-th register stage; a memory read takes two): the accepted beat addresses
    the sign and membrane memories (data with R2), R1 the bias (with R3), R3 the thresholds (with R5);
    R3 holds ``IN``, ``~IN`` or 0 and the leaked membrane, R4 ``X``, R5 ``H``, R6 the comparisons, R7
    the levels (a thermometer code's count: LUTs, no adder) and the new membrane, which is written back
    as R7 enters the output FIFO. Latency 7 cycles into the FIFO (9 to ``o``), one beat per cycle. Lanes
    past ``O`` give level 0.

    Parameters
    ----------
    lanes : int
        ``P``, channels per beat.
    in_width : int
        Signed width of the input values.
    levels : int
        ``D``, thresholds per channel (output levels 0..D).
    sign, bias : array [O]
        Per-channel sign (-1, 0 or 1) and integer bias.
    frac : int
        Left shift of the input.
    theta : array [O, D]
        Thresholds, non-decreasing along the second axis.
    leak_shift : int
        ``log2(tau)``; 0 makes the membrane irrelevant (``V - V = 0``), so no membrane memory is built.
    tokens : int
        ``N``, tokens per time step (the membrane memory holds ``N`` tokens).
    stateful : bool
        False when ``T == 1``: no membrane memory, ``H = X``.
    in_range : (int, int), optional
        Inclusive range of the input values, if narrower than ``in_width`` allows (narrows the datapath).
    ecp5 : bool or "model", optional
        Build memories of at least ``hdl.lanes.BRAM_MIN_DEPTH`` words from DP16KD block RAMs with their
        output registers (:func:`hdl.lanes.lane_memory`); the choice shared by every core
        (:mod:`hdl.ecp5`): None (default) follows the platform, True forces the primitives, ``"model"``
        simulates them, False uses Amaranth memories.
    src_loc_at : int
        As for any Amaranth component.

    Members
    -------
    i : In(stream.Signature(in_layout))
        ``{group, token, first, values: Array(signed(in_width), P), last}`` (``first`` marks the first time
        step; a stateless unit ignores it).
    o : Out(stream.Signature(out_layout))
        ``{group, token, levels: Array(unsigned(level_width), P), last}``, in input order.
    """

    LATENCY = 7
    QUEUE_DEPTH = LATENCY + 4

    def __init__(self, *, lanes, in_width, levels, sign, bias, frac, theta, leak_shift, tokens, stateful,
                 in_range=None, ecp5=None, src_loc_at=0):
        self._ecp5 = check_ecp5(ecp5)
        self._lanes = _check_int("lanes", lanes, 1)
        self._in_width = _check_int("in_width", in_width, 1)
        self._levels = _check_int("levels", levels, 1)
        self._frac = _check_int("frac", frac, 0, 62)
        self._leak = _check_int("leak_shift", leak_shift, 0, 62)
        self._tokens = _check_int("tokens", tokens, 1)
        if not isinstance(stateful, (bool, np.bool_)):
            raise TypeError(f"stateful must be a bool, not {stateful!r}")
        sign = _check_array("sign", sign, (1,))
        bias = _check_array("bias", bias, (1,))
        theta = _check_array("theta", theta, (2,))
        out = len(sign)
        if out == 0:
            raise ValueError("sign must have at least one channel, not shape (0,)")
        if bias.shape != (out,) or theta.shape != (out, self._levels):
            raise ValueError(f"bias {bias.shape} and theta {theta.shape} do not match {out} channels "
                             f"x {self._levels} levels")
        if not np.isin(sign, (-1, 0, 1)).all():
            raise ValueError(f"sign must hold -1, 0 or 1, not {sorted(set(sign.tolist()))!r}")
        if not (np.diff(theta, axis=1) >= 0).all():
            raise ValueError("theta must be non-decreasing along the levels axis")
        ilo, ihi = input_range(self._in_width, in_range)
        self._in_range = (ilo, ihi)
        self._stateful = bool(stateful) and self._leak > 0
        self._out = out

        # X = sign * (IN << frac) + bias, over the input range
        ends = [int(s) * (v << self._frac) + int(b) for s, b in zip(sign, bias) for v in (ilo, ihi)]
        xlo, xhi = min(ends), max(ends)
        if self._stateful:
            # invariants: V >= min(0, xlo << L) (the leak's fixed point), V <= xhi << L likewise, and a
            # kept membrane is below its channel's first threshold
            L = self._leak
            vlo = min(0, xlo << L)
            vhi = max(0, min(max(int(t) - 1 for t in theta[:, 0]), xhi << L))
            llo, lhi = vlo - (vlo >> L), vhi - (vhi >> L)
            hlo, hhi = llo + xlo, lhi + xhi
        else:
            vlo = vhi = llo = lhi = 0
            hlo, hhi = xlo, xhi
        self._x_range = (xlo, xhi)
        self._v_range = (vlo, vhi)
        self._leak_range = (llo, lhi)
        self._h_range = (hlo, hhi)
        # the sign is applied as ~IN (= -IN - 1); the missing 1 << frac goes into the bias
        self._sign = sign
        self._bias = bias + np.where(sign == -1, 1 << self._frac, 0)
        self._theta = np.clip(theta, hlo, hhi + 1)

        self._groups = _groups(out, self._lanes)
        super().__init__(
            lane_layout(self._groups, self._tokens, self._lanes, "values", signed(self._in_width), first=1),
            lane_layout(self._groups, self._tokens, self._lanes, "levels", unsigned(self.level_width)),
            src_loc_at=1 + src_loc_at)

    @classmethod
    def from_op(cls, op, *, lanes: int, in_width: int, tokens: int, timesteps: int, in_range=None, ecp5=None):
        """The unit for an ``ir.Neuron`` op (read by attribute; ``hdl`` does not import the compiler)."""
        return cls(lanes=lanes, in_width=in_width, levels=op.levels, sign=op.sign, bias=op.bias,
                   frac=op.frac, theta=op.theta, leak_shift=op.leak_shift, tokens=tokens,
                   stateful=timesteps > 1, in_range=in_range, ecp5=ecp5, src_loc_at=1)

    @property
    def level_width(self) -> int:
        return self._levels.bit_length()

    @property
    def stateful(self) -> bool:
        """Whether the unit keeps a membrane (T > 1 and leak_shift > 0)."""
        return self._stateful

    @property
    def membrane_range(self) -> tuple[int, int]:
        """Inclusive range of H (the compared membrane) that the datapath is sized for."""
        return self._h_range

    @property
    def membrane_width(self) -> int:
        """Signed width of the stored membrane V (0 when stateless)."""
        return signed_width(*self._v_range) if self._stateful else 0

    def _widths(self) -> tuple[int, int, int, int, int]:
        """Signed widths of X, V, the leaked membrane, H (and its thresholds) and the bias."""
        return (signed_width(*self._x_range), signed_width(*self._v_range), signed_width(*self._leak_range),
                signed_width(self._h_range[0], self._h_range[1] + 1),
                signed_width(int(self._bias.min()), int(self._bias.max())))

    @property
    def _membrane_depth(self) -> int:
        return self._tokens << index_bits(self._groups)

    def cost(self, name: str) -> CoreCost:
        """The parameter ROMs, the membrane memory (when stateful), the output queue and the lanes' widths
        (:mod:`hdl.cost`)."""
        P, D = self._lanes, self._levels
        xw, _, _, hw, bw = self._widths()
        vw = self.membrane_width
        roms = [lane_rom_cost(f"{name}.sign", [self._sign], 2, P), lane_rom_cost(f"{name}.bias", [self._bias], bw, P)]
        roms += [lane_rom_cost(f"{name}.theta{k}", [self._theta[:, k]], hw, P) for k in range(D)]
        memories = [rom for rom in roms if rom is not None]
        if self._stateful:
            memories.append(lane_memory_cost(f"{name}.membrane", width=P * vw, depth=self._membrane_depth))
        memories.append(OutputQueue.storage(f"{name}.queue", self.out_layout, self.QUEUE_DEPTH))
        return CoreCost("neuron", name, {"lanes": P, "in_bits": P * signed_width(*self._in_range), "x_bits": P * xw,
                                         "h_bits": P * hw * (1 + D), "v_bits": P * vw,
                                         "level_bits": P * self.level_width}, memories)

    def elaborate(self, platform):
        m = Module()
        P, D = self._lanes, self._levels
        ecp5 = use_ecp5(self._ecp5, platform)
        gbits, tbits = index_bits(self._groups), index_bits(self._tokens)
        xw, vw, lw, hw, bw = self._widths()
        L = self.LATENCY

        m.submodules.queue = queue = OutputQueue(self.out_layout, self.QUEUE_DEPTH)
        wiring.connect(m, queue.o, wiring.flipped(self.o))

        def addr_of(p):
            return Cat(p.group[:gbits], p.token[:tbits])

        def stage(name, shape, value):
            if isinstance(value, Const):
                return value                # a constant parameter stays a constant
            reg = Signal(shape, name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        # R1, R2 carry the beat; later stages only its group, token, first and last
        tag_layout = data.StructLayout({"group": self.in_layout["group"].shape,
                                        "token": self.in_layout["token"].shape, "first": 1, "last": 1})
        meta, valid = [self.i.payload], [Signal(name="valid0")]
        for k in range(1, L + 1):
            meta.append(Signal(self.in_layout if k < 3 else tag_layout, name=f"meta{k}", reset_less=True))
            valid.append(Signal(name=f"valid{k}"))
            m.d.sync += valid[k].eq(valid[k - 1])
            if k < 3:
                m.d.sync += meta[k].eq(meta[k - 1])
            else:
                m.d.sync += [getattr(meta[k], f).eq(getattr(meta[k - 1], f))
                             for f in ("group", "token", "first", "last")]

        # hazard: the membrane of this (token, group) may still be being computed for the previous step.
        # The check compares the group and only the token's low bits, enough to tell apart every token
        # within the pipeline's reach when beats come in order (token by token, groups in order); in
        # another order an alias only costs a stall cycle, never a wrong membrane.
        hazard = Signal()
        if self._stateful:
            tcheck = min(tbits, (-(-L // self._groups)).bit_length())

            def key(p):
                return Cat(p.group[:gbits], p.token[:tcheck])
            hits = [valid[k] & (key(meta[k]) == key(self.i.payload)) for k in range(1, L + 1)]
            m.d.comb += hazard.eq(~self.i.payload.first & Cat(*hits).any())
        m.d.comb += [
            self.i.ready.eq(queue.credit & ~hazard),
            valid[0].eq(self.i.valid & self.i.ready),
            queue.accept.eq(valid[0]),
        ]

        # memories (read data two cycles after the address): sign and membrane from the input beat (-> R2),
        # bias from R1 (-> R3), thresholds from R3 (-> R5); the membrane is written from R6
        sign2 = lane_rom(m, "sign", [self._sign], 2, P, self.i.payload.group[:gbits], ecp5)
        bias3 = lane_rom(m, "bias", [self._bias], bw, P, meta[1].group[:gbits], ecp5)
        theta5 = [lane_rom(m, f"theta{k}", [self._theta[:, k]], hw, P, meta[3].group[:gbits], ecp5)
                  for k in range(D)]
        if self._stateful:
            v_write = Signal(data.ArrayLayout(signed(vw), P))
            v2 = data.ArrayLayout(signed(vw), P)(lane_memory(
                m, "membrane", width=P * vw, depth=self._membrane_depth, read_addr=addr_of(self.i.payload),
                write=(addr_of(meta[L]), v_write.as_value(), valid[L]), ecp5=ecp5))

        levels = []
        lane_limit = self._out - (self._groups - 1) * P     # lanes of the last group that exist
        keep6 = Signal(name="keep6")                        # 0 when R6 holds the last group (its padding lanes)
        m.d.sync += keep6.eq(meta[5].group != self._groups - 1)
        for lane in range(P):
            s2, x2 = sign2[lane], meta[2].values[lane]
            # R2 -> R3: the selected input (IN, ~IN or 0) and the leaked membrane
            xsel3 = stage(f"xsel3_{lane}", signed(self._in_width), Mux(s2[0], Mux(s2[1], ~x2, x2), 0))
            if self._stateful:
                v = v2[lane]
                leak3 = stage(f"leak3_{lane}", signed(lw), Mux(meta[2].first, 0, v - v.shift_right(self._leak)))
            else:
                leak3 = Const(0, signed(1))
            # R3 -> R4: X
            x4 = stage(f"x4_{lane}", signed(xw), (xsel3 << self._frac) + bias3[lane])
            leak4 = stage(f"leak4_{lane}", leak3.shape(), leak3)
            # R4 -> R5: H
            h5 = stage(f"h5_{lane}", signed(hw), x4 + leak4)
            # R5 -> R6: compare; R6 -> R7: count, reset
            ge6 = stage(f"ge6_{lane}", D, Cat(h5 >= theta5[k][lane] for k in range(D)))
            count = _thermometer_count(list(ge6))
            if lane >= lane_limit:
                count = count & keep6.replicate(len(count))
            levels.append(stage(f"level7_{lane}", unsigned(self.level_width), count))
            if self._stateful:
                h6 = stage(f"h6_{lane}", signed(vw), h5)         # a kept membrane fits V's width
                m.d.comb += v_write[lane].eq(stage(f"vnext7_{lane}", signed(vw), Mux(ge6[0], 0, h6)))

        m.d.comb += queue_beat(queue, valid[L], meta[L].group, meta[L].token, meta[L].last, levels, "levels")
        return m

