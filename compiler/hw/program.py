"""The overlay's program: an integer IR graph compiled into layer descriptors and memory images.

``compile_program(graph, config)`` fuses the IR ops into descriptors (``hdl.npu.isa``: a producer --
MatMul, ElementWise, LinearAttention, CoSpike -- and its post operation -- Requant, Neuron, Requant + Add,
Logits), places every stored tensor in a scratchpad bank by liveness (a tensor's words are reused once its
last reader has run), and packs the weights and per-channel parameters into the images the host loads.
The result prints as a listing, one line per descriptor. Everything a program needs of the overlay is
checked against the :class:`hdl.npu.isa.Config` here, so that a program that compiles runs.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from hdl.npu.isa import (EXT_ALIGN, FETCH_TARGETS, Bank, Config, Descriptor, Kind, Mem, Operand, Post, fetch_ratio,
                         fetch_rows, head_span, pack_lanes, pack_rows, param_reads, row_layout)
from hdl.npu.overlay import SDRAM, ExtTiming, dense_lanes, descriptor_cycles, program_cycles
from hdl.packing import groups as n_groups
from hdl.sdram.litedram import STREAM_WORDS_PER_CYCLE
from hdl.packing import signed_width, unsigned_width

from .. import ir
from ..ir import golden
from ..errors import UserError

__all__ = ["Tensor", "Program", "compile_program", "fit_config", "model_id", "total_events"]


@dataclass(frozen=True)
class Tensor:
    """A stored tensor: ``frames`` x ``tokens`` x ``channels`` elements in ``bank`` (frames is 1 for a tensor
    that every time step shares), at ``operand.base`` once allocated."""
    name: str
    bank: Bank
    frames: int
    tokens: int
    channels: int
    lo: int
    hi: int

    def words(self, lanes: int) -> int:
        return self.frames * self.tokens * n_groups(self.channels, lanes)

    def operand(self, base: int, lanes: int) -> Operand:
        g = n_groups(self.channels, lanes)
        return Operand(self.bank, base, self.tokens * g if self.frames > 1 else 0, g if self.tokens > 1 else 0)


@dataclass
class Layer:
    """A descriptor before allocation: what it reads and writes, and its parameters."""
    desc: Descriptor
    ops: tuple[str, ...]
    srcs: tuple[str | None, str | None, str | None]     # the tensors of src0, src1, src2
    dst: str | None                                     # None for the logits
    weight: np.ndarray | None = None                    # [O, I]
    mult: np.ndarray | None = None                      # [O]
    bias: np.ndarray | None = None                      # [O] or [N, O]
    theta: np.ndarray | None = None                     # [O, levels]
    dense_ops: int = 0                                  # synaptic operations of the dense schedule
    group0: int = 0                                     # a tile's first output lane group (:func:`_tile`)
    token0: int = 0                                     # a tile's first token (:func:`_tile_tokens`)


@dataclass
class Program:
    """A compiled model: descriptors, memory images and the layout of its input and output."""
    config: Config
    descriptors: list[Descriptor]
    layers: list[Layer]
    tensors: dict[str, Tensor]
    operands: dict[str, Operand]
    weights: np.ndarray            # [words, lanes] int64: the weight store image
    mult: np.ndarray               # [words, lanes]
    bias: np.ndarray               # [words, lanes]
    theta: np.ndarray              # [words, lanes, levels]
    bank_words: dict[Bank, int]    # high-water mark of each scratchpad bank
    input_name: str
    input_kind: str
    input_frames: int
    patch: int
    classes: int
    timesteps: int
    model_id: int
    graph: ir.Graph
    meta: dict = field(default_factory=dict)
    ext: np.ndarray | None = None  # uint16: the external memory's image (what the FETCHes read), or None
    _ext_words: list | None = field(default=None, init=False, repr=False, compare=False)   # ext_image's, once

    @property
    def input(self) -> Tensor:
        return self.tensors[self.input_name]

    def input_elements(self, x: np.ndarray) -> np.ndarray:
        """One sample (``[C, H, W]`` or ``[T, C, H, W]``) -> the input tensor ``[frames, N, C * p * p]`` in
        patch order: token ``n = py * (W / p) + px``, channel ``(c, dy, dx)``."""
        p = self.patch
        frames = np.asarray(x, dtype=np.int64).reshape(self.input_frames, *np.shape(x)[-3:])
        f, c, h, w = frames.shape
        return frames.reshape(f, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(f, -1, c * p * p)

    def program_words(self) -> list[int]:
        return [w for d in self.descriptors for w in d.encode()]

    def images(self) -> dict[Mem, list[int]]:
        """What the host loads before the first inference, by memory: the program, the weights and the
        parameters, as words of the overlay's layouts (``hdl.npu.isa``)."""
        c = self.config
        Q = c.post_width

        def post_words(rows, bits):     # the post unit's memories: a group's parameters, post_width lanes a word
            return [pack_lanes(w[r:r + Q].reshape(-1), bits) for w in rows for r in range(0, c.lanes, Q)]
        return {Mem.PROGRAM: self.program_words(),
                Mem.WEIGHTS: [pack_lanes(w, c.weight_bits) for w in self.weights],
                Mem.MULT: post_words(self.mult, c.mult_bits),
                Mem.BIAS: post_words(self.bias, c.bias_bits),
                Mem.THETA: post_words(self.theta, c.theta_bits)}

    def ext_image(self) -> list[int]:
        """The external memory's contents (the FETCHes' source) as its 16-bit words (empty when everything is
        on chip): each FETCH's rows (``hdl.npu.isa.pack_rows``) from a multiple of ``EXT_ALIGN`` words on."""
        if self.ext is None:
            return []
        if self._ext_words is None:         # millions of words for the largest models: made once
            self._ext_words = self.ext.tolist()
        return list(self._ext_words)

    def fetched_words(self) -> int:
        """External words that the FETCHes of one inference read."""
        c = self.config
        return sum(fetch_rows(c, FETCH_TARGETS[d.fetch_to], d.in_ch) * fetch_ratio(c, FETCH_TARGETS[d.fetch_to])
                   for d in self.descriptors if d.kind == Kind.FETCH)

    def weight_placement(self, events: list | None = None) -> dict:
        """Where the weights and parameters live, for reports: ``placement`` (``"on chip"`` or ``"external
        memory"``) and ``parameters`` (the same for the per-channel parameters), the store's words and, when streamed, the
        external image's 16-bit words, the words an inference fetches, the fetches, the SDRAM bandwidth bound
        (those words at ``hdl.sdram.litedram.STREAM_WORDS_PER_CYCLE``) and the compute cycles (the cycle
        formula on ``events`` without the fetches) of one inference."""
        streamed = {FETCH_TARGETS[d.fetch_to] for d in self.descriptors if d.kind == Kind.FETCH}
        out = {"placement": "external memory" if Mem.WEIGHTS in streamed else "on chip",
               "parameters": "external memory" if streamed - {Mem.WEIGHTS} else "on chip",
               "weight_store_words": self.config.weight_depth, "weights_on_chip_words": int(len(self.weights))}
        if self.ext is not None:
            words = self.fetched_words()
            events = events or [0.0] * len(self.descriptors)
            out.update(image_words=len(self.ext), streamed_words=words,
                       fetches=sum(d.kind == Kind.FETCH for d in self.descriptors),
                       sdram_bound_cycles=words / STREAM_WORDS_PER_CYCLE,
                       compute_cycles=float(sum(descriptor_cycles(d, self.config, e) for d, e in
                                                zip(self.descriptors, events) if d.kind != Kind.FETCH)))
        return out

    def ext_id(self) -> int:
        """32 bits naming :meth:`ext_image` (never 0, which stands for no image): the host writes it beside a
        loaded image and compares it before each run (``hdl.npu.regmap.REG_EXT_ID``)."""
        digest = hashlib.sha256(np.asarray(self.ext_image(), dtype="<u2").tobytes()).digest()
        return int.from_bytes(digest[:4], "little") or 1

    def events(self, x: np.ndarray) -> list:
        """Non-zero events per descriptor and frame (what its src0 holds, mask applied; and src1's for
        LINEAR_ATTENTION, whose k pass is event-driven too; ``hdl.npu.overlay.frame_count``'s order), their mean
        over the samples ``x``, from the golden model's tensors: an array per descriptor that consumes events,
        0.0 for the others; a ``dense`` descriptor's are every lane it reads (``hdl.npu.overlay.dense_lanes``).
        The cycle formula is exact on one sample's."""
        _, env = golden.run(self.graph, x, trace=True)
        out: list = []
        P = self.config.lanes
        for d, layer in zip(self.descriptors, self.layers):
            if d.kind not in (Kind.MATMUL, Kind.LINEAR_ATTENTION):
                out.append(0.0)
                continue
            src = layer.srcs[0]
            if src == self.input_name:
                arr = np.stack([self.input_elements(s) for s in x])
            else:
                arr = env[src]
            arr = arr[:, :d.steps]
            if not d.conv_k:                # a tile of tokens reads its own
                arr = arr[:, :, layer.token0:layer.token0 + d.tokens]
            if d.dense:                     # every lane read is an event, zeros too
                arr = np.ones(arr.shape[:-1] + (arr.shape[-1] if d.mask else dense_lanes(d, P),), np.int64)
            if d.mask:
                arr = arr * env[layer.srcs[2]][:, :d.steps]
            per = np.count_nonzero(arr, axis=-1)                  # [samples, steps, tokens]
            if d.conv_k:          # a window's events: its tokens', once for every window that reads them
                index = np.array(d.window_tokens(), np.int64)
                per = np.where(index >= 0, per[:, :, np.maximum(index, 0)], 0).sum(axis=-1)
            # a frame that every step shares is read at every step
            per = np.broadcast_to(per, (len(x), d.steps, d.tokens))
            frames = per.mean(axis=0).T.ravel()                    # tokens outer, steps inner
            if d.kind == Kind.LINEAR_ATTENTION:                    # the k pass's frames (steps outer) first
                k = (np.full((d.steps, d.tokens), float(d.in_ch)) if d.dense else
                     np.count_nonzero(env[layer.srcs[1]][:, :d.steps], axis=-1).mean(axis=0))
                frames = np.concatenate([np.broadcast_to(k, (d.steps, d.tokens)).ravel(), frames])
            out.append(frames)
        return out + [0.0]

    def cycles(self, events: list | None = None, ext: ExtTiming = SDRAM) -> list[float]:
        """Cycles of each descriptor (the END included) for ``events`` per descriptor (:meth:`events`; none:
        the cost of a run without a spike); a FETCH at the external memory's timing ``ext`` (default: the
        board's SDRAM, an estimate; ``hdl.npu.overlay.IDEAL``: the Amaranth simulator's memory, exact). A FETCH
        counts its dispatch; a descriptor that waits for a running fetch counts the wait
        (``hdl.npu.overlay.program_cycles``)."""
        events = events or [0.0] * len(self.descriptors)
        return program_cycles(self.descriptors, self.config, events, ext)

    def listing(self, events: list | None = None, cycles=None) -> str:
        """One line per descriptor: what it computes, its operands' addresses, its dense synaptic operations
        and, given the mean events per descriptor (:meth:`events`), its events and cycles (the formula on them,
        or ``cycles`` per descriptor: a build's mean of each sample's)."""
        lines = [f"program {self.model_id:08x}: {len(self.descriptors)} descriptors, {self.config.lanes} lanes; "
                 f"spike bank {self.bank_words[Bank.SPIKES]:,} / {self.config.spike_depth:,} words, wide bank "
                 f"{self.bank_words[Bank.WIDE]:,} / {self.config.wide_depth:,}, weight store "
                 f"{len(self.weights):,} / {self.config.weight_depth:,}"
                 + (f" (streamed: {len(self.ext):,} words of external memory)"
                    if self.ext is not None else ""),
                 f"{'#':>3} {'layer':<22} {'computes':<34} {'reads':<24} {'writes':<8} {'dense ops':>10}"
                 + (f" {'events':>8} {'cycles':>8}" if events else "")]
        cycles = self.cycles(events) if cycles is None else [float(c) for c in cycles]
        for k, (d, layer) in enumerate(zip(self.descriptors, self.layers + [None])):
            if d.kind == Kind.END:
                lines.append(f"{k:>3} {'end':<22} {'':<34} {'':<24} {'':<8} {'':>10}"
                             + (f" {'':>8} {cycles[k]:>8,.0f}" if events else ""))
                continue
            if d.kind == Kind.FETCH:
                mem = FETCH_TARGETS[d.fetch_to]
                what = "weight words" if mem == Mem.WEIGHTS else f"{mem.name.lower()} groups"
                lines.append(f"{k:>3} {d.name:<22} {f'fetch {d.in_ch:,} {what}':<34} "
                             f"{f'X@{d.ext_base * EXT_ALIGN}':<24} {f'{mem.name[0].lower()}@{d.wbase}':<8} {'':>10}"
                             + (f" {'':>8} {_num(cycles[k]):>8}" if events else ""))
                continue
            reads = ", ".join(_where(op) for op, name in zip((d.src0, d.src1, d.src2), layer.srcs) if name)
            writes = "logits" if layer.dst is None else _where(d.dst)
            lines.append(f"{k:>3} {d.name:<22} {_computes(d):<34} {reads:<24} {writes:<8} {layer.dense_ops:>10,}"
                         + (f" {float(np.sum(events[k])):>8,.0f} {_num(cycles[k]):>8}" if events else ""))
        if events:
            missing = sum(c is None for c in cycles)
            lines.append(f"total: {sum(c for c in cycles if c is not None):,.0f} cycles per inference "
                         f"({total_events(events):,.0f} events)"
                         + (f", without {missing} descriptors the overlay cannot run yet" if missing else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Program {self.model_id:08x}: {len(self.descriptors)} descriptors, "
                f"{len(self.weights)} weight words, {self.config.lanes} lanes>")


def total_events(events: list) -> float:
    """All the events of :meth:`Program.events`'s list (per descriptor and frame)."""
    return float(sum(np.sum(e) for e in events))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _where(op: Operand) -> str:
    return f"{'S' if op.bank == Bank.SPIKES else 'W'}@{op.base}"


def _computes(d: Descriptor) -> str:
    shape = f"{d.steps}x{d.tokens}x{d.in_ch}->{d.out_ch}"
    producer = {Kind.MATMUL: "matmul" + ("+mask" if d.mask else "") + (" reduce" if d.reduce else ""),
                Kind.ELEMENTWISE: "copy", Kind.LINEAR_ATTENTION: f"linattn h{d.heads}",
                Kind.COSPIKE: "cospike", Kind.MAXPOOL: f"maxpool{d.conv_k}/{d.conv_stride}"}[d.kind]
    if d.conv_k:             # a window: the channels of one tap (padded to whole lane groups)
        producer = f"conv{d.conv_k}/{d.conv_stride}" if d.kind == Kind.MATMUL else producer
        shape = f"{d.steps}x{d.tokens}x{d.in_ch // d.conv_k ** 2}->{d.out_ch}"
    post = {Post.REQUANT: "rq" + ("+add" if d.add else ""), Post.NEURON: "neuron", Post.LOGITS: "logits"}[d.post]
    return f"{producer} {shape} {post}"


class _Compiler:
    def __init__(self, graph: ir.Graph, config: Config):
        self.graph, self.cfg = graph, config
        self.types = ir.check(graph, integer=True)
        self.T = int(graph.meta.get("timesteps", 1))
        self.consumers: dict[str, list[ir.Op]] = {}
        for op in graph.ops:
            for s in op.srcs:
                self.consumers.setdefault(s, []).append(op)
        self.tensors: dict[str, Tensor] = {}
        self.layers: list[Layer] = []
        self.problems: list[str] = []
        self.needs: dict[str, tuple[int, str]] = {}
        self.wants: dict[str, int] = {}         # what avoids extra work, beyond the needs (fit_config takes it)
        self.alias: dict[str, str] = {}        # a Tokenize's output: the input tensor itself

    # -- checks ---------------------------------------------------------------------------------

    def need(self, ok: bool, what: str) -> None:
        if not ok and what not in self.problems:
            self.problems.append(what)

    def require(self, knob: str, value: int, what: str) -> None:
        """The program needs the configuration field ``knob`` to be at least ``value`` (``what`` says why)."""
        if value > self.needs.get(knob, (0, ""))[0]:
            self.needs[knob] = (int(value), what)

    def fits_signed(self, lo: int, hi: int, what: str, knob: str) -> None:
        width = signed_width(int(lo), int(hi))
        self.require(knob, width, f"{what} needs {width}-bit signed values")

    def shortfalls(self) -> list[str]:
        """What the program needs beyond the configuration, with the field that would have to grow."""
        return [f"{what}, the overlay has {getattr(self.cfg, knob):,} ({knob})"
                for knob, (value, what) in self.needs.items() if value > getattr(self.cfg, knob)] + self.problems

    # -- tensors ----------------------------------------------------------------------------------

    def frames_of(self, name: str) -> int:
        return self.tensors[name].frames if name in self.tensors else 1

    def store(self, name: str, bank: Bank, frames: int) -> None:
        t = self.types[name]
        tokens = t.shape[1] if len(t.shape) == 3 else 1
        self.tensors[name] = Tensor(name, bank, frames, tokens, t.shape[-1], t.lo, t.hi)
        if bank == Bank.SPIKES:
            self.need(t.lo >= 0, f"{name}: spike levels must not be negative")
            self.require("spike_bits", unsigned_width(t.hi), f"{name}'s spike levels up to {t.hi} need "
                                                             f"{unsigned_width(t.hi)} bits")
        else:
            self.fits_signed(t.lo, t.hi, name, "wide_bits")

    def only(self, op: ir.Op, kinds) -> ir.Op:
        users = self.consumers.get(op.dst, [])
        if len(users) != 1 or not isinstance(users[0], kinds):
            names = "/".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
            raise UserError(f"the model cannot be mapped to the overlay: {op.name} must feed exactly one {names}")
        return users[0]

    # -- post operations ------------------------------------------------------------------------

    def post(self, layer: Layer, acc: tuple[int, int], last: ir.Op) -> Layer:
        """Fuse the post operation ``last`` (a Requant, maybe with its Add, or a Neuron) into ``layer``, whose
        accumulators range over ``acc``; return it."""
        self.fits_signed(*acc, f"{layer.desc.name}'s accumulator", "acc_bits")
        frames = max(self.frames_of(s) for s in layer.srcs if s) if any(layer.srcs) else 1
        d = layer.desc
        if isinstance(last, ir.Neuron):
            frames = self.T
            O = len(last.sign)
            mult = last.sign.astype(np.int64) << last.frac
            bias = last.bias.astype(np.int64)
            hlo, hhi = ir.membrane_range(last, ir.TensorType((), *acc), self.T)
            self.fits_signed(min(hlo, int(bias.min())), max(hhi, int(bias.max())), f"{last.name}'s membrane",
                             "post_bits")
            pad = (1 << (self.cfg.theta_bits - 1)) - 1
            self.require("levels", last.levels, f"{last.name} has {last.levels} levels")
            # an unused level's threshold (the largest value) must be out of the membrane's reach
            self.require("theta_bits", signed_width(0, hhi + 1), f"{last.name}'s membrane reaches {hhi}")
            theta = np.full((O, self.cfg.levels), pad, dtype=np.int64)
            used = min(last.levels, self.cfg.levels)
            theta[:, :used] = last.theta[:, :used]
            self.fits_signed(int(last.theta.min()), int(last.theta.max()), f"{last.name}'s thresholds", "theta_bits")
            d = _replace(d, post=Post.NEURON, leak=last.leak_shift)
            layer.theta = theta
            layer.ops += (last.name,)
            dst = last.dst
            self.store(dst, Bank.SPIKES, frames)
        else:
            rq = last
            mult = rq.mult.astype(np.int64)
            half = (1 << rq.shift) >> 1
            bias = rq.bias.astype(np.int64) + half
            ends = [a * m for a in acc for m in (int(mult.min()), int(mult.max()))]
            self.fits_signed(min(ends) + int(bias.min()), max(ends) + int(bias.max()), f"{rq.name}'s product",
                             "post_bits")
            d = _replace(d, shift=rq.shift, sat=rq.saturate or 0, bias_per_token=bias.ndim == 2)
            layer.ops += (rq.name,)
            if rq.dst == self.graph.output:
                d = _replace(d, post=Post.LOGITS)
                t = self.types[rq.dst]
                self.fits_signed(t.lo, t.hi, "the logits", "logit_bits")
                self.require("classes", t.shape[-1], f"{t.shape[-1]} classes need as many logit registers")
                dst = None
            else:
                users = self.consumers.get(rq.dst, [])
                if len(users) == 1 and isinstance(users[0], ir.Add):
                    add = users[0]
                    res = add.a if add.b == rq.dst else add.b
                    frames = max(frames, self.frames_of(res))
                    layer.srcs = (layer.srcs[0], res, layer.srcs[2])
                    d = _replace(d, add=True, add_width=add.width)
                    layer.ops += (add.name,)
                    dst = add.dst
                else:
                    dst = rq.dst
                self.store(dst, Bank.WIDE, frames)
        self.fits_signed(int(mult.min()), int(mult.max()), f"{layer.ops[-1]}'s multipliers", "mult_bits")
        self.fits_signed(int(bias.min()), int(bias.max()), f"{layer.ops[-1]}'s biases", "bias_bits")
        out = self.types[dst] if dst else self.types[self.graph.output]
        groups = n_groups(out.shape[-1], self.cfg.lanes)
        if _tileable(d, dst):           # split into tiles where the accumulators are fewer (_tile)
            self.wants["out_groups"] = max(self.wants.get("out_groups", 0), groups)
        else:
            self.require("out_groups", groups, f"{layer.desc.name} has {out.shape[-1]} output channels")
        out_tokens = out.shape[1] if len(out.shape) == 3 else 1
        layer.desc = _replace(d, steps=self.T if d.reduce else frames, out_tokens=out_tokens,
                              out_ch=out.shape[-1])
        layer.dst, layer.mult, layer.bias = dst, mult, bias
        return layer

    # -- producers ------------------------------------------------------------------------------

    def matmul_weights_fit(self, name: str, weight: np.ndarray, bits: int) -> None:
        self.require("weight_bits", bits, f"{name} has {bits}-bit weights")

    def events_fit(self, name: str, src: str) -> None:
        """The sparse engine's levels are signed ``event_bits``-bit values: a wide tensor's elements (pixels,
        the SepConv's small integers), or a spike tensor's levels."""
        t = self.types[src]
        width = signed_width(min(int(t.lo), 0), int(t.hi))
        self.require("event_bits", width, f"{name}'s events in [{t.lo}, {t.hi}] need {width}-bit signed levels")

    def compile(self) -> list[Layer]:
        g = self.graph
        in_t = g.input_type
        conv = g.ops[0]
        frames = 1 if g.input_kind == "image" else self.T
        if isinstance(conv, ir.PatchConv):
            p = conv.weight.shape[-1]
            N = self.types[conv.dst].shape[1]
            fan_in = int(np.prod(conv.weight.shape[1:]))
        elif isinstance(conv, ir.Tokenize):        # the input as tokens: the patch order with p = 1
            p, N, fan_in = 1, int(np.prod(in_t.shape[-2:])), in_t.shape[-3]
            self.alias[conv.dst] = g.input_name
        else:
            raise UserError(f"the model cannot be mapped to the overlay: it must start with a PatchConv or a "
                            f"Tokenize, not {conv.name}")
        self.tensors[g.input_name] = Tensor(g.input_name, Bank.WIDE, frames, N, fan_in, in_t.lo, in_t.hi)
        self.fits_signed(in_t.lo, in_t.hi, "the input", "wide_bits")
        self.patch, self.input_frames = p, frames
        done: set[str] = set()
        for op in g.ops:
            if op.name in done:
                continue
            layer = self.producer(op)
            if layer is None:
                continue
            done.update(layer.ops)
            self.layers.append(layer)
        covered = done | {op.name for op in g.ops if isinstance(op, (ir.Mask, ir.SumPool, ir.Tokenize))}
        missing = [op.name for op in g.ops if op.name not in covered]
        if missing:
            raise UserError(f"the model cannot be mapped to the overlay: no descriptor for {', '.join(missing)}")
        if not any(layer.dst is None for layer in self.layers):
            raise UserError("the model cannot be mapped to the overlay: no head writes the logits")
        return self.layers

    def source(self, op: ir.Op, name: str) -> Tensor:
        """The stored tensor ``name`` that ``op`` reads (UserError if no descriptor stores it)."""
        name = self.alias.get(name, name)
        if name not in self.tensors:
            raise UserError(f"the model cannot be mapped to the overlay: {op.name} reads {name}, which no "
                            "descriptor stores")
        return self.tensors[name]

    def window(self, x: Tensor, kernel: int, stride: int, padding: int, height: int, width: int,
               out_width: int) -> dict[str, int]:
        """The descriptor's window fields for a ``kernel`` x ``kernel`` window over ``x`` as a grid."""
        G = n_groups(x.channels, self.cfg.lanes)
        nstep = G if x.tokens > 1 else 0
        row = width * nstep
        return dict(conv_k=kernel, conv_stride=stride, conv_pad=padding, conv_groups=G, in_height=height,
                    in_width=width, out_width=out_width, conv_rowstep=row, conv_origin=padding * (row + nstep))

    def producer(self, op: ir.Op) -> Layer | None:
        g = self.graph
        if isinstance(op, ir.Conv):
            x = self.source(op, op.src)
            self.matmul_weights_fit(op.name, op.weight, op.bits)
            self.events_fit(op.name, x.name)
            weight = _window_weight(op.weight, x.channels, self.cfg.lanes)
            tokens = op.out_height * op.out_width
            d = Descriptor(Kind.MATMUL, op.name, tokens=tokens, in_ch=weight.shape[1],
                           **self.window(x, op.kernel, op.stride, op.padding, op.height, op.width, op.out_width))
            layer = Layer(d, (op.name,), (x.name, None, None), None, weight=weight,
                          dense_ops=op.weight.size * tokens * x.frames)
            return self.post(layer, self.range(op.dst), self.only(op, (ir.Requant, ir.Neuron)))
        if isinstance(op, ir.MaxPool):
            x = self.source(op, op.src)
            self.need(x.bank == Bank.SPIKES, f"{op.name} pools {x.name}, a wide tensor: MAXPOOL pools spikes")
            win = self.window(x, op.kernel, op.stride, op.padding, op.height, op.width, op.out_width)
            d = Descriptor(Kind.MAXPOOL, op.name, tokens=op.out_height * op.out_width,
                           in_ch=op.kernel ** 2 * win["conv_groups"] * self.cfg.lanes, **win)
            layer = Layer(d, (op.name,), (x.name, None, None), None)
            self.store(op.dst, Bank.SPIKES, x.frames)
            out = self.types[op.dst]
            self.require("out_groups", n_groups(x.channels, self.cfg.lanes), f"{op.name} has {x.channels} channels")
            layer.desc = _replace(d, steps=x.frames, out_tokens=out.shape[1], out_ch=x.channels)
            layer.dst, layer.mult, layer.bias = op.dst, np.ones(x.channels, np.int64), np.zeros(x.channels, np.int64)
            return layer
        if isinstance(op, ir.PatchConv):
            weight = op.weight.reshape(op.weight.shape[0], -1)
            self.matmul_weights_fit(op.name, weight, op.bits)
            self.events_fit(op.name, op.src)
            d = Descriptor(Kind.MATMUL, op.name, tokens=self.tensors[op.src].tokens, in_ch=weight.shape[1])
            layer = Layer(d, (op.name,), (op.src, None, None), None, weight=weight,
                          dense_ops=weight.size * self.tensors[op.src].tokens * self.tensors[op.src].frames)
            return self.post(layer, self.range(op.dst), self.only(op, (ir.Requant, ir.Neuron)))
        if isinstance(op, ir.Dense):
            src, mask, ops = self.alias.get(op.src, op.src), None, (op.name,)
            reduce = False
            if src != g.input_name:
                producer = g.op(src)
                if isinstance(producer, ir.Mask):
                    src, mask = producer.q, producer.m
                    ops = (producer.name, op.name)
                elif isinstance(producer, ir.SumPool):
                    src, reduce = producer.src, True
                    ops = (producer.name, op.name)
            if src not in self.tensors or (mask and mask not in self.tensors):
                raise UserError(f"the model cannot be mapped to the overlay: {op.name} reads {op.src}, "
                                "which no descriptor stores")
            self.matmul_weights_fit(op.name, op.weight, op.bits)
            self.events_fit(op.name, src)
            x = self.tensors[src]
            d = Descriptor(Kind.MATMUL, op.name, tokens=x.tokens, in_ch=op.weight.shape[1], mask=mask is not None,
                           reduce=reduce)
            layer = Layer(d, ops, (src, None, mask), None, weight=op.weight,
                          dense_ops=op.weight.size * x.tokens * x.frames)
            return self.post(layer, self.range(op.dst), self.only(op, (ir.Requant, ir.Neuron)))
        if isinstance(op, ir.Neuron) and op.src in self.tensors:
            x = self.tensors[op.src]
            d = Descriptor(Kind.ELEMENTWISE, op.name, tokens=x.tokens, in_ch=x.channels)
            layer = Layer(d, (), (op.src, None, None), None)
            return self.post(layer, (x.lo, x.hi), op)     # a neuron on a stored tensor: a copy, then it
        if isinstance(op, ir.LinearAttention):
            q = self.tensors[op.q]
            P, dh = self.cfg.lanes, q.channels // op.heads
            span = head_span(dh, op.heads, P)
            d = Descriptor(Kind.LINEAR_ATTENTION, op.name, tokens=q.tokens, in_ch=q.channels, heads=op.heads,
                           head_groups=dh // P, head_lanes=dh % P, head_span=span)
            self.require("kv_depth", self.T * q.channels * span, f"{op.name}'s K^T V of {self.T} step(s), "
                         f"{q.channels} channels, {span} group(s) per head")
            k, v = self.tensors[op.k], self.tensors[op.v]
            ends = [a * b * k.tokens for a in (k.lo, k.hi) for b in (v.lo, v.hi)]
            self.fits_signed(min(ends + [0]), max(ends + [0]), f"{op.name}'s K^T V", "kv_bits")
            # the last head's groups may run past the output's: the accumulator words they add zeros into
            self.require("out_groups", ((op.heads - 1) * dh) // P + span, f"{op.name}'s heads span")
            layer = Layer(d, (op.name,), (op.q, op.k, op.v), None,
                          dense_ops=2 * q.tokens * q.channels * (q.channels // op.heads) * self.T)
            return self.post(layer, self.range(op.dst), self.only(op, (ir.Requant, ir.Neuron)))
        if isinstance(op, ir.CoSpike):
            k = self.tensors[op.k]
            d = Descriptor(Kind.COSPIKE, op.name, tokens=k.tokens, in_ch=k.channels)
            layer = Layer(d, (op.name,), (op.k, op.v, None), None, dense_ops=k.tokens * k.channels * self.T)
            return self.post(layer, self.range(op.dst), self.only(op, (ir.Requant, ir.Neuron)))
        if isinstance(op, (ir.Mask, ir.SumPool, ir.Tokenize)):
            return None            # fused into the Dense that reads them; the Tokenize: the input's layout
        raise UserError(f"the model cannot be mapped to the overlay: no descriptor for {op.name} "
                        f"({type(op).__name__})")

    def range(self, name: str) -> tuple[int, int]:
        return self.types[name].lo, self.types[name].hi


def _replace(d: Descriptor, **changes) -> Descriptor:
    return replace(d, **changes)


def _window_weight(weight: np.ndarray, channels: int, lanes: int) -> np.ndarray:
    """A (grouped) convolution's ``[O, C / groups, k, k]`` weights as the MATMUL's ``[O, k * k * G * lanes]`` over
    its window's words (tap by tap, ``G`` lane groups of the ``channels`` inputs each, zero where a group's output
    does not read the input: a depthwise convolution is a block-diagonal one)."""
    O, per_group, k, _ = weight.shape
    groups = channels // per_group
    full = np.zeros((O, k * k, n_groups(channels, lanes) * lanes), np.int64)
    for g in range(groups):
        outs = slice(g * (O // groups), (g + 1) * (O // groups))
        full[outs, :, g * per_group:(g + 1) * per_group] = (
            weight[outs].reshape(O // groups, per_group, k * k).transpose(0, 2, 1))
    return full.reshape(O, -1)


def _tileable(d: Descriptor, dst: str | None) -> bool:
    """A layer whose output channels may be split among several descriptors: a MATMUL into the scratchpad."""
    return d.kind == Kind.MATMUL and not d.reduce and dst is not None


def _tile(layers: list[Layer], config: Config, max_words: int | None = None, max_groups: int | None = None
          ) -> list[Layer]:
    """Split each MATMUL with more output lane groups than the accumulators hold (``out_groups``), or (with
    ``max_words`` / ``max_groups``) more weight words or parameter groups than that, into tiles of at most that
    many groups, one descriptor each, named ``name[lo:hi]`` by their channels. A tile is the layer with its rows
    of the weights and of the per-channel parameters; it reads all of src0 and writes its channels of dst (and
    reads its channels of a residual src1): its operands start ``group0`` words further on."""
    P, out = config.lanes, []
    for layer in layers:
        d = layer.desc
        G = n_groups(d.out_ch, P)
        most = config.out_groups
        if max_words is not None and layer.weight is not None:
            most = max(1, min(most, max_words // d.in_ch))
        if max_groups is not None:
            most = max(1, min(most, max_groups))
        if not _tileable(d, layer.dst) or G <= most:
            out.append(layer)
            continue
        for g0 in range(0, G, most):
            lo, hi = g0 * P, min(d.out_ch, (g0 + most) * P)
            out.append(Layer(_replace(d, name=f"{d.name}[{lo}:{hi}]", out_ch=hi - lo), layer.ops, layer.srcs,
                             layer.dst, weight=layer.weight[lo:hi], mult=layer.mult[lo:hi],
                             bias=layer.bias[..., lo:hi],
                             theta=None if layer.theta is None else layer.theta[lo:hi],
                             dense_ops=layer.dense_ops * (hi - lo) // d.out_ch, group0=g0))
    return out


def _tile_tokens(layers: list[Layer], config: Config, max_groups: int) -> list[Layer]:
    """Split each MATMUL with a per-token bias of more than ``max_groups`` lane groups (tokens x its groups: a
    stem with the position embedding folded in) into tiles of fewer tokens, named ``name@n0`` by their first
    token: each reads and writes its tokens' words (``token0``), with the same weights."""
    out = []
    for layer in layers:
        d = layer.desc
        G = n_groups(d.out_ch, config.lanes)
        if not (_tileable(d, layer.dst) and d.bias_per_token and d.tokens * G > max_groups):
            out.append(layer)
            continue
        if d.conv_k or d.tokens != d.out_tokens or G > max_groups:
            raise UserError(f"{d.name}: its per-token bias ({d.tokens} tokens x {G} lane groups) does not fit the "
                            f"parameter memories' {max_groups} groups, and it cannot be split by tokens")
        chunk = max_groups // G
        for n0 in range(0, d.tokens, chunk):
            n = min(chunk, d.tokens - n0)
            out.append(replace(layer, desc=_replace(d, name=f"{d.name}@{n0}", tokens=n, out_tokens=n),
                               bias=layer.bias[n0:n0 + n], dense_ops=layer.dense_ops * n // d.tokens,
                               token0=layer.token0 + n0))
    return out


def _param_rows(layer: Layer, lanes: int) -> dict[Mem, np.ndarray]:
    """A layer's per-channel parameters as lane groups (``[groups, lanes(, levels)]``), by memory."""
    b = layer.bias
    out = {Mem.MULT: _pack_rows(layer.mult, lanes),
           Mem.BIAS: np.concatenate([_pack_rows(row, lanes) for row in b]) if b.ndim == 2 else _pack_rows(b, lanes)}
    if layer.theta is not None:
        out[Mem.THETA] = _pack_rows(layer.theta, lanes)
    return out


def _segments(sizes: list[int], half: int) -> list[tuple[int, int]]:
    """Runs ``[first, end)`` of consecutive layers whose sizes (lane groups of one parameter memory; 0: none) sum
    to at most ``half``, each starting at a layer with a size."""
    out, start, total = [], None, 0
    for k, size in enumerate(sizes):
        if not size:
            continue
        if start is None or total + size > half:
            if start is not None:
                out.append((start, k))
            start, total = k, 0
        total += size
    if start is not None:
        out.append((start, len(sizes)))
    return out


def _overlap_fetches(descs: list[Descriptor], placed: list[Layer], config: Config
                     ) -> tuple[list[Descriptor], list[Layer]]:
    """Move each FETCH before the descriptor ahead of it, which then runs while it fetches (``overlap``), where
    that descriptor reads nothing the FETCH writes and overlaps no other: a tile computes while the next tile's
    weights (the first of the FETCHes before it) arrive in the other half of the store."""
    out_d: list[Descriptor] = []
    out_l: list[Layer] = []
    for d, layer in zip(descs, placed):
        if d.kind == Kind.FETCH and out_d and out_d[-1].kind != Kind.FETCH and not out_d[-1].overlap:
            lo, hi = d.wbase, d.wbase + d.in_ch
            used = param_reads(out_d[-1], config).get(FETCH_TARGETS[d.fetch_to])
            if used is None or used[1] <= lo or hi <= used[0]:
                out_d.insert(-1, d)
                out_l.insert(-1, layer)
                out_d[-1] = _replace(out_d[-1], overlap=True)
                continue
        out_d.append(d)
        out_l.append(layer)
    return out_d, out_l


def _ext_rows(config: Config, mem: Mem, groups: np.ndarray) -> np.ndarray:
    """Lane groups of ``mem`` (weight-store words ``[words, lanes]``, or a parameter memory's ``[groups, lanes,
    ...]``) as external words: the memory's rows (:func:`hdl.npu.isa.row_layout`) packed."""
    values, bits, _ = row_layout(config, mem)
    return pack_rows(np.asarray(groups).reshape(-1, values), bits, fetch_ratio(config, mem))


def _allocate(layers: list[Layer], tensors: dict[str, Tensor], input_name: str, lanes: int, keep: bool = False
              ) -> tuple[dict[str, int], dict[Bank, int]]:
    """Scratchpad addresses by liveness: a tensor lives from its writer (the input: from the start) to its last
    reader, both inclusive, and two tensors that live at once never share a word. A residual add's output takes
    its residual's words when the add is the residual's last reader (the post unit reads each word of it before
    writing the same word). Of two placements, each bank keeps the one with fewer words: first fit in the order
    the tensors are written, and the largest tensors first. With ``keep``, every tensor lives to the end and
    none shares words (all of them can be read back after a run: ``simulate --trace``)."""
    first = {input_name: -1}
    last: dict[str, int] = {}
    for k, layer in enumerate(layers):
        for s in layer.srcs:
            if s:
                last[s] = k
        if layer.dst:
            first.setdefault(layer.dst, k)
            last.setdefault(layer.dst, k)
    if keep:
        last = {name: len(layers) for name in last}
    root = {name: name for name in first}
    if not keep:
        for k, layer in enumerate(layers):
            res, dst = layer.srcs[1], layer.dst
            if not (layer.desc.add and res and dst and root[dst] == dst and k == first[dst]):
                continue
            a, b = tensors[res], tensors[dst]
            readers = [later for later in layers[k:last[res] + 1] if res in later.srcs]
            if ((a.bank, a.frames, a.tokens, a.channels) == (b.bank, b.frames, b.tokens, b.channels)
                    and all(r.dst == dst and r.desc.add and r.srcs[1] == res and res not in (r.srcs[0], r.srcs[2])
                            for r in readers)):
                root[dst] = root[res]
    span: dict[str, tuple[int, int]] = {}                   # a storage unit's lifetime: its tensors'
    for name, r in root.items():
        lo, hi = span.get(r, (first[name], last.get(name, first[name])))
        span[r] = (min(lo, first[name]), max(hi, last.get(name, first[name])))
    units = {bank: [r for r in span if tensors[r].bank == bank] for bank in (Bank.SPIKES, Bank.WIDE)}

    def place(order: list[str]) -> dict[str, int]:
        bases: dict[str, int] = {}
        for u in order:
            lo, hi = span[u]
            size, base = tensors[u].words(lanes), 0
            for b, e in sorted((bases[o], bases[o] + tensors[o].words(lanes)) for o in bases
                               if span[o][0] <= hi and lo <= span[o][1]):
                if base + size <= b:
                    break
                base = max(base, e)
            bases[u] = base
        return bases

    bases, high = {}, {}
    for bank, names in units.items():
        in_order = sorted(names, key=lambda u: (span[u][0], u != input_name))
        largest = sorted(names, key=lambda u: (-tensors[u].words(lanes), span[u][0]))
        tries = [place(in_order), place(largest)]
        highs = [max((b[u] + tensors[u].words(lanes) for u in b), default=0) for b in tries]
        best = min(range(len(tries)), key=lambda i: highs[i])
        bases.update(tries[best])
        high[bank] = highs[best]
    return {name: bases[r] for name, r in root.items()}, high


def _pack_rows(values: np.ndarray, lanes: int) -> np.ndarray:
    """``[O, ...]`` per-channel values -> ``[groups, lanes, ...]`` (zero past O)."""
    G = n_groups(values.shape[0], lanes)
    out = np.zeros((G * lanes, *values.shape[1:]), dtype=np.int64)
    out[:values.shape[0]] = values
    return out.reshape(G, lanes, *values.shape[1:])


def model_id(graph: ir.Graph) -> int:
    """A 32-bit identifier of the integer model (CRC-32 of every op's parameters): the host compares it with
    the one a loaded program or a build report names."""
    crc = 0
    for op in graph.ops:
        crc = zlib.crc32(f"{type(op).__name__}:{op.name}:{op.srcs}".encode(), crc)
        for value in vars(op).values():
            if isinstance(value, np.ndarray):
                crc = zlib.crc32(np.ascontiguousarray(value, dtype=np.int64).tobytes(), crc)
            elif isinstance(value, (int, str)):
                crc = zlib.crc32(repr(value).encode(), crc)
    return crc


def compile_program(graph: ir.Graph, config: Config | None = None, *, keep: bool = False,
                    dense: bool = False) -> Program:
    """Compile an integer graph (``flows.lower``) for an overlay ``config`` (default: ``Config()``); with
    ``keep``, no scratchpad word is reused, so that every stored tensor can be read back after a run; with
    ``dense``, every MATMUL and LINEAR_ATTENTION is ``dense`` (every lane an event: the event-driven schedule's
    baseline, the same results).

    Raises UserError (one line) if the model cannot be expressed as descriptors or does not fit the
    configuration: every shortfall is named with the configuration field that would need to grow."""
    cfg = config or Config()
    c = _Compiler(graph, cfg)
    layers = c.compile()
    P = cfg.lanes
    # with an external memory, weights that do not fit the store stream (each tile's FETCHed into one half of it,
    # the halves in turn, right before the tile runs), and so do per-channel parameters that do not fit their
    # memories (the parameters of a run of layers per memory into one half of it)
    untiled = [_param_rows(layer, P) for layer in layers]
    total = sum(n_groups(l.desc.out_ch, P) * l.desc.in_ch for l in layers if l.weight is not None)
    stream_w = cfg.ext_depth > 0 and total > cfg.weight_depth
    stream_p = cfg.ext_depth > 0 and any(sum(len(g.get(mem, ())) for g in untiled) > cfg.param_depth
                                         for mem in (Mem.MULT, Mem.BIAS, Mem.THETA))
    stream = stream_w or stream_p
    half, half_p = cfg.weight_depth // 2, cfg.param_depth // 2
    layers = _tile(layers, cfg, half if stream_w else None, half_p if stream_p else None)
    if stream_p:
        layers = _tile_tokens(layers, cfg, half_p)
    bases, high = _allocate(layers, c.tensors, graph.input_name, P, keep)
    operands = {name: t.operand(bases[name], P) for name, t in c.tensors.items()}
    weights, params = [], {Mem.MULT: [], Mem.BIAS: [], Mem.THETA: []}
    sizes = {Mem.WEIGHTS: 0, Mem.MULT: 0, Mem.BIAS: 0, Mem.THETA: 0}
    descs, placed, ext, ext_words = [], [], [], 0
    fetches = {mem: 0 for mem in FETCH_TARGETS}

    def fetch(name: str, mem: Mem, rows: np.ndarray, count: int, at: int) -> None:
        nonlocal ext_words
        pad = -ext_words % EXT_ALIGN
        ext.append(np.zeros(pad, np.uint16))
        ext_words += pad
        d = Descriptor(Kind.FETCH, name, in_ch=count, wbase=at, ext_base=ext_words // EXT_ALIGN,
                       fetch_to=FETCH_TARGETS.index(mem))
        descs.append(d)
        placed.append(Layer(d, (), (None, None, None), None))
        words = _ext_rows(cfg, mem, rows)
        ext.append(words)
        ext_words += len(words)
        fetches[mem] += 1

    groups = [_param_rows(layer, P) for layer in layers]               # the tiles'
    segment_of: dict[tuple[Mem, int], tuple[int, int]] = {}      # (memory, first layer) -> the run it starts
    if stream_p:
        for mem in params:
            for first, end in _segments([len(g.get(mem, ())) for g in groups], half_p):
                segment_of[mem, first] = (first, end)
    fetched_weight, run_base = None, {mem: 0 for mem in params}
    for k, layer in enumerate(layers):
        d = layer.desc
        ch = {}
        for slot, name in zip(("src0", "src1", "src2"), layer.srcs):
            if name:
                ch[slot] = operands[name]
        if layer.dst:
            ch["dst"] = operands[layer.dst]
        if layer.group0:                                # a tile: its channels of dst (and of the residual)
            for slot in ("dst", "src1") if d.add else ("dst",):
                ch[slot] = replace(ch[slot], base=ch[slot].base + layer.group0)
        if layer.token0:                                # a tile of tokens: its tokens' words
            for slot in ("src0", "dst", "src1") if d.add else ("src0", "dst"):
                ch[slot] = replace(ch[slot], base=ch[slot].base + layer.token0 * ch[slot].nstep)
        if layer.weight is not None:
            w = _pack_rows(layer.weight, P)                     # [G, P, I]
            words = w.transpose(0, 2, 1).reshape(-1, P)          # word g*I + i, lane l = W[g*P+l, i]
            if layer.weight is not fetched_weight:              # a token tile shares its layer's weights
                fetched_weight = layer.weight
                if stream_w:
                    c.require("weight_depth", 2 * len(words), f"{d.name}'s {len(words):,} weight words, in each "
                              "half of the store (streamed)")
                    at = (fetches[Mem.WEIGHTS] % 2) * half
                    fetch(f"{d.name}<", Mem.WEIGHTS, words, len(words), at)
                else:
                    at = sizes[Mem.WEIGHTS]
                    weights.append(words)
                    sizes[Mem.WEIGHTS] += len(words)
            ch["wbase"] = at
        for mem, field_name in ((Mem.MULT, "mult_base"), (Mem.BIAS, "bias_base"), (Mem.THETA, "theta_base")):
            if mem not in groups[k]:
                continue
            if not stream_p:
                ch[field_name] = sizes[mem]
                params[mem].append(groups[k][mem])
                sizes[mem] += len(groups[k][mem])
                continue
            if (mem, k) in segment_of:                          # the first layer of a run: fetch the run's
                first, end = segment_of[mem, k]
                rows = np.concatenate([g[mem] for g in groups[first:end] if mem in g])
                c.require("param_depth", 2 * len(rows), f"{d.name}'s {len(rows):,} {mem.name.lower()} groups, in "
                          "each half of the memory (streamed)")
                run_base[mem] = (fetches[mem] % 2) * half_p
                fetch(f"{d.name}<{mem.name.lower()}", mem, rows, len(rows), run_base[mem])
            ch[field_name] = run_base[mem]
            run_base[mem] += len(groups[k][mem])
        if dense and d.kind in (Kind.MATMUL, Kind.LINEAR_ATTENTION):
            ch["dense"] = True
        descs.append(_replace(d, **ch))
        placed.append(layer)
    if stream:
        descs, placed = _overlap_fetches(descs, placed, cfg)
    descs.append(Descriptor(Kind.END, "end"))
    if stream:
        c.require("ext_depth", -(-ext_words // fetch_ratio(cfg, Mem.WEIGHTS)),
                  f"the weights and parameters need {ext_words:,} words of external memory")
    for bank, knob in ((Bank.SPIKES, "spike_depth"), (Bank.WIDE, "wide_depth")):
        c.require(knob, high[bank], f"the {bank.name.lower()} bank needs {high[bank]:,} words")
    c.require("weight_depth", sizes[Mem.WEIGHTS], f"the weights need {sizes[Mem.WEIGHTS]:,} words")
    for mem in params:
        c.require("param_depth", sizes[mem], f"the {mem.name.lower()} memory needs {sizes[mem]:,} words")
    c.require("program_depth", len(descs), f"{len(descs)} descriptors")
    for d in descs:
        try:
            d.encode()
        except ValueError as exc:
            c.need(False, str(exc))
    if c.shortfalls():
        raise UserError("the model does not fit the overlay: " + "; ".join(c.shortfalls()))
    program_needs = {knob: value for knob, (value, _) in c.needs.items()}
    for knob, value in c.wants.items():
        program_needs[knob] = max(program_needs.get(knob, 0), value)

    def stack(parts, shape):
        return np.concatenate(parts) if parts else np.zeros((0, *shape), np.int64)

    out = graph.op(graph.output) if graph.output != graph.input_name else None
    return Program(config=cfg, descriptors=descs, layers=placed, tensors=c.tensors, operands=operands,
                   weights=stack(weights, (P,)), mult=stack(params[Mem.MULT], (P,)),
                   bias=stack(params[Mem.BIAS], (P,)), theta=stack(params[Mem.THETA], (P, cfg.levels)), bank_words=high, input_name=graph.input_name,
                   input_kind=graph.input_kind, input_frames=c.input_frames, patch=c.patch,
                   classes=c.types[graph.output].shape[-1], timesteps=c.T, model_id=model_id(graph), graph=graph,
                   meta={"output_op": out.name if out else None, "needs": program_needs},
                   ext=np.concatenate(ext) if stream else None)


#: A configuration that any program fits: only its ``needs`` are read (``fit_config``).
_ROOMY = Config(spike_bits=16, wide_bits=62, event_bits=16, spike_depth=1 << 30, wide_depth=1 << 30,
                weight_bits=16, weight_depth=1 << 30, acc_bits=62, mult_bits=62, bias_bits=62, post_bits=62,
                levels=64, theta_bits=62, param_depth=1 << 30, out_groups=1 << 30, kv_bits=62, kv_depth=1 << 30,
                program_depth=1 << 30, classes=1 << 16, logit_bits=62)


def fit_config(graph: ir.Graph, lanes: int = 16, *, keep: bool = False, post_lanes: int = 0,
               weight_store: int | None = None, param_store: int | None = None) -> Config:
    """The smallest configuration of ``lanes`` lanes (a post unit of ``post_lanes``, 0: all of them) that
    ``graph``'s program fits (each width and depth as the program needs it). ``weight_store``: a weight store
    of that many words, and ``param_store``: parameter memories of that many lane groups (default: as many as
    the model has); the weights or the parameters that do not fit in them stream from an external memory
    (``ext_depth`` the program's words rounded up to a power of two), else there is none."""
    roomy = replace(_ROOMY, lanes=lanes, post_lanes=post_lanes)
    needs = compile_program(graph, roomy, keep=keep).meta["needs"]
    # twice the widest output's accumulators: each post runs beside the next frame (hdl.npu.overlay.splits)
    needs["out_groups"] = 2 * needs.get("out_groups", 1)
    if weight_store is None:
        if param_store is not None:
            raise UserError("a parameter store (--param-store) needs a weight store (--weight-store)")
        return Config(lanes=lanes, post_lanes=post_lanes, **needs)
    for what, value in (("weight store of", weight_store), ("parameter store of", param_store)):
        if value is not None and value < 2:
            raise UserError(f"a {what} {value} words holds nothing")
    # again with the widths found, the stores and an external memory: the tiles and fetches set the depths
    fitted = Config(lanes=lanes, post_lanes=post_lanes, **needs)
    stores = dict(weight_depth=weight_store, param_depth=param_store or fitted.param_depth)
    streaming = replace(fitted, **stores, ext_depth=1 << 22, spike_depth=1 << 30, wide_depth=1 << 30,
                        program_depth=1 << 30)
    needs = compile_program(graph, streaming, keep=keep).meta["needs"]
    ext = needs.get("ext_depth", 0)
    return replace(fitted, **{**needs, **stores, "out_groups": fitted.out_groups,
                              "ext_depth": 1 << (ext - 1).bit_length() if ext else 0})
