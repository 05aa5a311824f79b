"""The hardware plan: how an integer IR graph maps onto the generated accelerator.

One object, read by the HDL generator (``hdl.accelerator``), the cycle and resource estimators and the
simulators: the lane count ``P``, the buffers (one on-chip memory per stored tensor, with its word layout),
and the stages the controller runs for every time step, each fusing the IR ops it executes
(``docs/architecture.md``). A plan prints as a table (``str(plan)``) and saves as JSON (``to_dict``); the
weights stay in the IR ops it references.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from hdl.packing import index_bits, signed_width

from .. import ir
from ..errors import UserError

DEFAULT_LANES = 16


@dataclass(frozen=True)
class Buffer:
    """An on-chip memory holding one tensor of the current time step.

    Word ``(token, group)`` is at address ``token << group_bits | group`` and holds ``lanes`` values of
    ``width`` bits: channels ``group * lanes ..``, lane ``l`` in bits ``[l * width, (l + 1) * width)``.
    """
    name: str                 # the IR tensor
    kind: str                 # "pixels", "residual", "spikes"
    tokens: int
    channels: int
    lanes: int
    width: int                # bits per value
    signed: bool

    @property
    def groups(self) -> int:
        return -(-self.channels // self.lanes)

    @property
    def group_bits(self) -> int:
        return index_bits(self.groups)

    @property
    def depth(self) -> int:
        return self.tokens << self.group_bits

    @property
    def word_width(self) -> int:
        return self.lanes * self.width

    @property
    def bits(self) -> int:
        return self.depth * self.word_width

    def pack(self, values: np.ndarray) -> np.ndarray:
        """``[tokens, channels]`` integers -> ``[depth]`` Python-int words of this layout."""
        v = np.asarray(values, dtype=np.int64).reshape(self.tokens, self.channels)
        mask = (1 << self.width) - 1
        words = [0] * self.depth
        for n in range(self.tokens):
            for c in range(self.channels):
                g, lane = divmod(c, self.lanes)
                words[(n << self.group_bits) | g] |= (int(v[n, c]) & mask) << (lane * self.width)
        return np.array(words, dtype=object)

    def unpack(self, words) -> np.ndarray:
        """``[depth]`` words -> ``[tokens, channels]`` int64 (sign-extended if ``signed``)."""
        out = np.zeros((self.tokens, self.channels), dtype=np.int64)
        mask = (1 << self.width) - 1
        for n in range(self.tokens):
            for c in range(self.channels):
                g, lane = divmod(c, self.lanes)
                v = (int(words[(n << self.group_bits) | g]) >> (lane * self.width)) & mask
                if self.signed and v >> (self.width - 1):
                    v -= 1 << self.width
                out[n, c] = v
        return out


@dataclass(frozen=True)
class Stage:
    """One engine of the accelerator: reads ``srcs``, executes ``ops`` (IR op names), writes ``dst``.

    ``kind`` names the engine (docs/architecture.md): ``stem`` (PatchConv, Requant), ``residual_neuron``
    (Neuron on the residual stream), ``dense_neuron`` (Dense, Neuron), ``dense_residual`` (Dense, Requant,
    Add), ``linear_attention`` (LinearAttention, Neuron), ``cospike`` (CoSpike, Neuron: sdsa1's mask) and
    ``head`` (SumPool, Dense, Requant: accumulated over every token and time step, the logits written after
    the last one). ``once``: run at the first time step only (the stem of an image, which every step
    shares). ``mask``: sdsa1's Mask before a Dense stage, its second source (a spike map of one token),
    which the stage's reader ANDs into the first one's lanes."""
    kind: str
    name: str
    ops: tuple[str, ...]
    srcs: tuple[str, ...]
    dst: str | None
    once: bool = False
    mask: str | None = None


@dataclass
class Plan:
    graph: ir.Graph
    types: dict[str, ir.TensorType]
    lanes: int
    dense: bool
    buffers: dict[str, Buffer]
    stages: list[Stage]
    timesteps: int
    tokens: int
    classes: int
    logit_width: int
    model_id: int
    meta: dict = field(default_factory=dict)

    def op(self, name: str) -> ir.Op:
        return self.graph.op(name)

    @property
    def input_buffer(self) -> Buffer:
        return self.buffers[self.graph.input_name]

    @property
    def pixel_frames(self) -> int:
        """Frames of pixels in the input memory: 1 for an image, T for event frames."""
        return 1 if self.graph.input_kind == "image" else self.timesteps

    def input_words(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One sample (``[C, H, W]`` or ``[T, C, H, W]``) -> (offsets, values) for the pixel region.

        Pixels go in patch order: frame ``f``, token ``n``, then ``(c, dy, dx)`` within the patch, at offset
        ``((f * N + n) << fan_in_bits) | i``."""
        conv = self.op(self.stages[0].ops[0])
        p = conv.weight.shape[-1]
        frames = np.asarray(x, dtype=np.int64).reshape(self.pixel_frames, *self.graph.input_type.shape[-3:])
        f, c, h, w = frames.shape
        patches = frames.reshape(f, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(f, -1, c * p * p)
        fan_in = c * p * p
        ib = index_bits(fan_in)
        fi, ni, ii = np.meshgrid(np.arange(f), np.arange(patches.shape[1]), np.arange(fan_in), indexing="ij")
        offsets = ((fi * patches.shape[1] + ni) << ib) | ii
        return offsets.reshape(-1), patches.reshape(-1)

    @property
    def fan_in_bits(self) -> int:
        conv = self.op(self.stages[0].ops[0])
        return index_bits(int(np.prod(conv.weight.shape[1:])))

    def to_dict(self) -> dict:
        return {
            "model_id": f"{self.model_id:08x}",
            "lanes": self.lanes,
            "dense": self.dense,
            "timesteps": self.timesteps,
            "tokens": self.tokens,
            "classes": self.classes,
            "logit_width": self.logit_width,
            "buffers": [{"name": b.name, "kind": b.kind, "tokens": b.tokens, "channels": b.channels,
                         "lanes": b.lanes, "width": b.width, "depth": b.depth, "bits": b.bits}
                        for b in self.buffers.values()],
            "stages": [{"kind": s.kind, "name": s.name, "ops": list(s.ops), "srcs": list(s.srcs),
                        "dst": s.dst, "once": s.once} for s in self.stages],
        }

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    def __str__(self) -> str:
        lines = [f"plan {self.model_id:08x}: P={self.lanes} lanes, T={self.timesteps}, N={self.tokens} tokens, "
                 f"{'dense' if self.dense else 'event-driven'}",
                 f"{'stage':<22} {'engine':<17} {'reads':<40} writes"]
        for s in self.stages:
            lines.append(f"{s.name:<22} {s.kind:<17} {', '.join(s.srcs):<40} {s.dst or 'logits'}"
                         + ("  (first step only)" if s.once else ""))
        lines.append(f"{'buffer':<22} {'kind':<9} {'words':>6} x {'bits':<5} {'total bits':>10}")
        for b in self.buffers.values():
            lines.append(f"{b.name:<22} {b.kind:<9} {b.depth:>6} x {b.word_width:<5} {b.bits:>10}")
        return "\n".join(lines)


def _choose_lanes(lanes: int | None, dim: int) -> int:
    if lanes is None:
        return max(p for p in range(1, min(DEFAULT_LANES, dim) + 1) if dim % p == 0)
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1 or dim % lanes:
        valid = ", ".join(str(p) for p in range(1, dim + 1) if dim % p == 0)
        raise UserError(f"--lanes must divide the model width {dim} (one of {valid}), not {lanes}")
    return lanes


def model_id(graph: ir.Graph) -> int:
    """A 32-bit identifier of the integer program (CRC-32 of every op's parameters)."""
    crc = 0
    for op in graph.ops:
        crc = zlib.crc32(f"{type(op).__name__}:{op.name}:{op.srcs}".encode(), crc)
        for value in vars(op).values():
            if isinstance(value, np.ndarray):
                crc = zlib.crc32(np.ascontiguousarray(value, dtype=np.int64).tobytes(), crc)
            elif isinstance(value, (int, str)):
                crc = zlib.crc32(repr(value).encode(), crc)
    return crc


#: IR ops the golden model executes but no engine of the accelerator does yet (issue 13's hardware part).
_NOT_YET = {ir.Tokenize: "the input as a token grid", ir.Conv: "k x k convolution",
            ir.MaxPool: "max-pooling"}


def refuse_unsupported(graph: ir.Graph) -> None:
    """UserError naming the IR ops of ``graph`` that no hardware executes yet (the first of each kind); call it
    before reading a graph as the accelerator's (``build_plan`` does)."""
    first: dict[type, str] = {}
    for op in graph.ops:
        if type(op) in _NOT_YET:
            first.setdefault(type(op), op.name)
    if first:
        what = ", ".join(f"{kind.__name__} ({_NOT_YET[kind]}, first at {name})" for kind, name in first.items())
        raise UserError(f"the model cannot be mapped to hardware: {what} {'is' if len(first) == 1 else 'are'} "
                        "not supported by the one-engine-per-layer generator: drop --generator (the overlay, "
                        "every command's default, runs conv stages)")


def build_plan(graph: ir.Graph, lanes: int | None = None, dense: bool = False) -> Plan:
    """Map an integer graph (``lower.lower``) onto engines and buffers; raise UserError if it cannot."""
    types = ir.check(graph, integer=True)
    T = graph.meta.get("timesteps", 1)
    ops = list(graph.ops)
    refuse_unsupported(graph)
    consumers: dict[str, list[ir.Op]] = {}
    for op in ops:
        for s in op.srcs:
            consumers.setdefault(s, []).append(op)
    conv = ops[0]
    if not isinstance(conv, ir.PatchConv):
        raise UserError(f"the model cannot be mapped to hardware: it must start with a PatchConv, not {conv.name}")
    dim = conv.weight.shape[0]
    P = _choose_lanes(lanes, dim)
    N = types[conv.dst].shape[1]
    buffers: dict[str, Buffer] = {}
    stages: list[Stage] = []

    def only(op: ir.Op, kind) -> ir.Op:
        users = consumers.get(op.dst, [])
        if len(users) != 1 or not isinstance(users[0], kind):
            raise UserError(f"the model cannot be mapped to hardware: {op.name} must feed exactly one "
                            f"{kind.__name__}")
        return users[0]

    def residual(name: str) -> None:
        t = types[name]
        buffers[name] = Buffer(name, "residual", N, t.shape[-1], P, signed_width(t.lo, t.hi), True)

    def spikes(name: str, lanes_: int, tokens: int = N) -> None:
        t = types[name]
        buffers[name] = Buffer(name, "spikes", tokens, t.shape[-1], lanes_, max(1, int(t.hi).bit_length()), False)

    frames = 1 if graph.input_kind == "image" else T
    fan_in = int(np.prod(conv.weight.shape[1:]))
    buffers[graph.input_name] = Buffer(graph.input_name, "pixels", frames * N, fan_in, 1,
                                       max(1, int(graph.input_type.hi).bit_length()), False)
    rq = only(conv, ir.Requant)
    residual(rq.dst)
    stages.append(Stage("stem", "stem", (conv.name, rq.name), (graph.input_name,), rq.dst,
                        once=graph.input_kind == "image"))

    head_seen = False
    for op in ops[2:]:
        if isinstance(op, ir.Neuron) and buffers.get(op.src, None) is not None \
                and buffers[op.src].kind == "residual":
            spikes(op.dst, P)
            stages.append(Stage("residual_neuron", op.name, (op.name,), (op.src,), op.dst))
        elif isinstance(op, ir.Dense) and isinstance(graph.op(op.src) if op.src != graph.input_name else None,
                                                      ir.SumPool):
            pool = graph.op(op.src)
            logits = only(op, ir.Requant)
            if logits.dst != graph.output:
                raise UserError("the model cannot be mapped to hardware: the head must end the graph")
            stages.append(Stage("head", "head", (pool.name, op.name, logits.name), (pool.src,), None))
            head_seen = True
        elif isinstance(op, ir.Dense):
            src = op.src
            mask: str | None = None
            if src not in buffers:
                producer = graph.op(src)
                if isinstance(producer, ir.Mask):
                    src, mask = producer.q, producer.m
                else:
                    raise UserError(f"the model cannot be mapped to hardware: {op.name} reads {src}, "
                                    "which no engine stores")
            reads = (src, mask) if mask else (src,)
            post = only(op, (ir.Neuron, ir.Requant))
            if isinstance(post, ir.Neuron):
                spikes(post.dst, P)
                stages.append(Stage("dense_neuron", op.name, (op.name, post.name), reads, post.dst,
                                    mask=mask))
            else:
                add = only(post, ir.Add)
                res = add.a if add.b == post.dst else add.b
                residual(add.dst)
                stages.append(Stage("dense_residual", op.name, (op.name, post.name, add.name),
                                    (*reads, res), add.dst, mask=mask))
        elif isinstance(op, ir.LinearAttention):
            sn = only(op, ir.Neuron)
            d = types[op.q].shape[-1] // op.heads
            spikes(sn.dst, d)
            stages.append(Stage("linear_attention", op.name, (op.name, sn.name), (op.v, op.k, op.q), sn.dst))
        elif isinstance(op, ir.CoSpike):
            sn = only(op, ir.Neuron)
            spikes(sn.dst, P, tokens=1)
            stages.append(Stage("cospike", op.name, (op.name, sn.name), (op.v, op.k), sn.dst))
    covered = {name for s in stages for name in s.ops}
    covered |= {op.name for op in ops if isinstance(op, ir.Mask)}
    missing = [op.name for op in ops if op.name not in covered]
    if missing or not head_seen:
        raise UserError(f"the model cannot be mapped to hardware: no engine for {', '.join(missing) or 'the head'}")
    out = types[graph.output]
    classes = out.shape[-1]
    return Plan(graph=graph, types=types, lanes=P, dense=dense, buffers=buffers, stages=stages, timesteps=T,
                tokens=N, classes=classes, logit_width=signed_width(out.lo, out.hi), model_id=model_id(graph))
