"""The integer IR: an ordered list of typed operations on named tensors, and its checker.

Every activation tensor has the per-sample shape ``[T, N, C]`` (time steps, tokens, channels), except the
pooled vector ``[C]`` and the logits ``[K]``. The exact arithmetic of each operation is the contract in
``docs/semantics.md``; :mod:`compiler.ir.golden` executes it. Two operations (``AffineNeuron``, ``AffineRequant``)
still carry float parameters: the lowering passes replace them, and ``check(graph, integer=True)``
refuses a graph that still has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from hdl.packing import signed_width, unsigned_width

from ..errors import UserError

MULT_BITS = 18            # requantization multipliers fit the ECP5's 18x18 multipliers...
MAX_MULT_BITS = 35        # ...except degenerate channels, which may need two cascaded ones
INT_LIMIT = 1 << 62       # every intermediate value of the golden model must fit int64 with room to spare


def neuron_thresholds(levels: int) -> list[float]:
    """Membrane thresholds of a D-level neuron: level k is reached at u >= (2k-1)/(2D)."""
    return [(2 * k - 1) / (2 * levels) for k in range(1, levels + 1)]


@dataclass(frozen=True)
class TensorType:
    """Per-sample shape and the inclusive integer range ``[lo, hi]`` of every element."""
    shape: tuple[int, ...]
    lo: int
    hi: int

    @property
    def bits(self) -> int:
        """Width of a two's-complement (signed) or unsigned (lo >= 0) register that holds every value."""
        return unsigned_width(self.hi) if self.lo >= 0 else signed_width(self.lo, self.hi)

    @property
    def signed(self) -> bool:
        return self.lo < 0


@dataclass(eq=False)
class Op:
    name: str

    @property
    def srcs(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def dst(self) -> str:
        return self.name


@dataclass(eq=False)
class PatchConv(Op):
    """Stem: ``ACC[t, n, o] = sum_{c,dy,dx} W[o, c, dy, dx] * X[t, c, py*p+dy, px*p+dx]``, n = py * (H/p) + px.

    Image inputs (``[C, H, W]``) are computed once and repeated over the ``timesteps`` steps."""
    src: str
    weight: np.ndarray            # int64 [O, C, p, p]
    bits: int
    timesteps: int

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class Tokenize(Op):
    """The graph's input as tokens: ``Y[t, y*W + x, c] = X[c, y, x]`` for an image ``[C, H, W]`` (the same at
    every one of the ``timesteps`` steps), ``Y[t, y*W + x, c] = X[t, c, y, x]`` for event frames ``[T, C, H, W]``.
    Layout only: no arithmetic."""
    src: str
    timesteps: int

    @property
    def srcs(self):
        return (self.src,)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling along one axis: ``(size + 2 * padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(eq=False)
class Conv(Op):
    """k x k convolution over tokens that form an ``height`` x ``width`` grid (token ``n = y * width + x``):

    ``ACC[t, oy*Wo + ox, o] = sum_{j, dy, dx} weight[o, j, dy, dx] * X[t, (oy*s+dy-p)*width + (ox*s+dx-p), g*C/G + j]``

    with ``X = 0`` outside the grid (zero padding), ``g = o // (O/G)`` the group of output ``o`` and
    ``G = groups`` (depthwise: ``G = C = O``). ``height``/``width`` are the input's; the output tokens form
    the ``Ho x Wo`` grid, ``Ho = (height + 2p - k) // s + 1`` (docs/semantics.md)."""
    src: str
    weight: np.ndarray            # int64 [O, C / groups, k, k]
    bits: int
    height: int
    width: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def srcs(self):
        return (self.src,)

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    @property
    def out_height(self) -> int:
        return conv_out(self.height, self.kernel, self.stride, self.padding)

    @property
    def out_width(self) -> int:
        return conv_out(self.width, self.kernel, self.stride, self.padding)


@dataclass(eq=False)
class MaxPool(Op):
    """k x k max-pooling of non-negative values (spikes) over tokens that form a ``height`` x ``width`` grid:

    ``Y[t, oy*Wo + ox, c] = max_{dy, dx} X[t, (oy*s+dy-p)*W + (ox*s+dx-p), c]``, ``X = 0`` outside the grid."""
    src: str
    height: int
    width: int
    kernel: int
    stride: int
    padding: int = 0

    @property
    def srcs(self):
        return (self.src,)

    @property
    def out_height(self) -> int:
        return conv_out(self.height, self.kernel, self.stride, self.padding)

    @property
    def out_width(self) -> int:
        return conv_out(self.width, self.kernel, self.stride, self.padding)


@dataclass(eq=False)
class Dense(Op):
    """``ACC[..., o] = sum_i W[o, i] * X[..., i]`` (a 1x1 conv over tokens, or the head)."""
    src: str
    weight: np.ndarray            # int64 [O, I]
    bits: int

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class AffineRequant(Op):
    """Float form of ``Requant``: ``round_half_up((a * X + b) * 2**frac)``; replaced by a lowering pass.

    ``frac=None`` asks the pass for the most fractional bits the multiplier allows, with no rounding
    (used for the logits)."""
    src: str
    a: np.ndarray                 # float64 [O]
    b: np.ndarray                 # float64 [O] or [N, O]
    frac: int | None
    saturate: int | None          # signed output width, or None when no saturation is needed

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class Requant(Op):
    """``Y = sat((X * mult[o] + bias[.., o] + half) >> shift)``, ``half = 2**(shift-1)`` (0 if shift = 0).

    ``>>`` is an arithmetic shift (floor division), so this rounds half up. ``sat`` clamps to a signed
    ``saturate``-bit range, or is the identity when ``saturate`` is None."""
    src: str
    mult: np.ndarray              # int64 [O], within MULT_BITS signed bits (MAX_MULT_BITS at most)
    bias: np.ndarray              # int64 [O] or [N, O]
    shift: int
    frac: int                     # the output's fractional bits (documentation and reports)
    saturate: int | None

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class Add(Op):
    """Saturating add of two signed fixed-point tensors of the same format: ``Y = sat_width(A + B)``."""
    a: str
    b: str
    width: int

    @property
    def srcs(self):
        return (self.a, self.b)


@dataclass(eq=False)
class AffineNeuron(Op):
    """Float form of ``Neuron``, fed by ``u = a[o] * ACC + b[o]``; replaced by a lowering pass."""
    src: str
    levels: int
    a: np.ndarray                 # float64 [O]
    b: np.ndarray                 # float64 [O]
    leak_shift: int

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class Neuron(Op):
    """Multi-threshold LIF neuron over the time axis, per channel o (see docs/semantics.md):

    ``X = sign[o] * (ACC << frac) + bias[o]``;  ``H = V - (V >> leak_shift) + X``  (V = 0 at t = 0);
    ``level = #{k : H >= theta[o, k]}``;  ``V = H if level == 0 else 0``. With one time step the leak
    and the state play no part."""
    src: str
    levels: int
    sign: np.ndarray              # int64 [O] in {-1, 0, 1}
    bias: np.ndarray              # int64 [O]
    frac: int
    theta: np.ndarray             # int64 [O, levels], non-decreasing along k
    leak_shift: int

    @property
    def srcs(self):
        return (self.src,)


@dataclass(eq=False)
class CoSpike(Op):
    """sdsa1: ``C[t, 0, c] = sum_n K[t, n, c] * V[t, n, c]`` (AND and popcount for binary spikes)."""
    k: str
    v: str

    @property
    def srcs(self):
        return (self.k, self.v)


@dataclass(eq=False)
class Mask(Op):
    """sdsa1: ``Y[t, n, c] = Q[t, n, c] * M[t, 0, c]`` with M binary: Q's spikes where the mask is set."""
    q: str
    m: str

    @property
    def srcs(self):
        return (self.q, self.m)


@dataclass(eq=False)
class LinearAttention(Op):
    """linear: per head h, ``KV[t, i, j] = sum_n K[t, n, h*d+i] * V[t, n, h*d+j]`` and
    ``A[t, n, h*d+j] = sum_i Q[t, n, h*d+i] * KV[t, i, j]`` (d = C / heads)."""
    q: str
    k: str
    v: str
    heads: int

    @property
    def srcs(self):
        return (self.q, self.k, self.v)


@dataclass(eq=False)
class SumPool(Op):
    """Head pooling: ``Y[c] = sum_{t, n} X[t, n, c]`` (the mean's constant divisor is folded into the head)."""
    src: str

    @property
    def srcs(self):
        return (self.src,)


@dataclass
class Graph:
    """An IR program: its input, its ops in execution order, and the name of its logits tensor."""
    input_name: str
    input_type: TensorType
    input_kind: str                       # "image" (uint8) or "events" (binary frames)
    ops: list[Op]
    output: str
    meta: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)


class IRError(Exception):
    """The IR violates its own rules: a compiler bug or a model outside what the hardware can represent."""


def _is_int_array(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.int64


def _range_of_dot(weight: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Exact bounds of ``W @ x`` over x in [lo, hi]^I, taken over every output."""
    wp = np.clip(weight, 0, None).reshape(weight.shape[0], -1).sum(1)
    wn = np.clip(weight, None, 0).reshape(weight.shape[0], -1).sum(1)
    highs = [int(p) * hi + int(n) * lo for p, n in zip(wp, wn)]
    lows = [int(p) * lo + int(n) * hi for p, n in zip(wp, wn)]
    return min(lows), max(highs)


def _sat_range(width: int) -> tuple[int, int]:
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def neuron_input_range(op: Neuron, src: TensorType) -> tuple[int, int]:
    """Range of ``X = sign * (ACC << frac) + bias``."""
    ends = [int(s) * (v << op.frac) + int(b) for s, b in zip(op.sign, op.bias) for v in (src.lo, src.hi)]
    return min(ends), max(ends)


def membrane_range(op: Neuron, src: TensorType, timesteps: int) -> tuple[int, int]:
    """Range of the membrane H: X at T = 1; with state, V < max theta and V >= X_min * 2**leak_shift."""
    xlo, xhi = neuron_input_range(op, src)
    if timesteps == 1:
        return xlo, xhi
    vhi = max(0, int(op.theta.max()) - 1)
    vlo = min(0, xlo << op.leak_shift)
    return vlo + xlo - (vlo >> op.leak_shift), vhi + xhi


def _requant_range(op: Requant, src: TensorType) -> tuple[int, int]:
    half = (1 << op.shift) >> 1
    bias = op.bias.reshape(-1, op.bias.shape[-1])
    ends = []
    for o, m in enumerate(op.mult):
        for v in (src.lo, src.hi):
            for b in (int(bias[:, o].min()), int(bias[:, o].max())):
                ends.append((v * int(m) + b + half) >> op.shift)
    lo, hi = min(ends), max(ends)
    if op.saturate is not None:
        slo, shi = _sat_range(op.saturate)
        lo, hi = max(lo, slo), min(hi, shi)
        lo, hi = min(lo, shi), max(hi, slo)
    return lo, hi


def _check_grid(op: Conv | MaxPool, x: TensorType, graph: Graph, need) -> None:
    """The rules a Conv and a MaxPool share: a [T, N, C] input whose tokens form the op's grid, a stride."""
    need(op.src != graph.input_name, op, "reads the graph's input directly (a Tokenize makes it tokens)")
    need(len(x.shape) == 3 and x.shape[0] == graph.meta.get("timesteps", 1), op, f"input {x.shape} is not [T, N, C]")
    for name in ("height", "width", "stride"):
        value = getattr(op, name)
        need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, op,
             f"{name} must be a positive integer, not {value!r}")
    need(isinstance(op.padding, int) and not isinstance(op.padding, bool), op,
         f"padding must be an integer, not {op.padding!r}")
    need(x.shape[1] == op.height * op.width, op,
         f"{x.shape[1]} tokens do not form a {op.height} x {op.width} grid")


def infer_types(graph: Graph, integer: bool = False) -> dict[str, TensorType]:
    """Check every op of ``graph`` and return the type of every tensor; raise IRError on the first fault."""
    types: dict[str, TensorType] = {graph.input_name: graph.input_type}
    timesteps = graph.meta.get("timesteps", 1)

    def need(cond, op: Op, what: str) -> None:
        if not cond:
            raise IRError(f"{op.name} ({type(op).__name__}): {what}")

    for op in graph.ops:
        need(op.dst not in types, op, f"tensor {op.dst!r} is defined twice")
        for s in op.srcs:
            need(s in types, op, f"reads {s!r} before it is defined")
        ins = [types[s] for s in op.srcs]
        if integer:
            need(not isinstance(op, (AffineNeuron, AffineRequant)), op, "float op left in an integer graph")

        if isinstance(op, (PatchConv, Dense)):
            x = ins[0]
            need(_is_int_array(op.weight), op, "weights must be an int64 array")
            qlo, qhi = -(1 << (op.bits - 1)), (1 << (op.bits - 1)) - 1
            need(op.weight.size == 0 or (op.weight.min() >= qlo and op.weight.max() <= qhi), op,
                 f"weights outside the signed {op.bits}-bit range")
            lo, hi = _range_of_dot(op.weight, x.lo, x.hi)
            if isinstance(op, PatchConv):
                o, c, p, p2 = op.weight.shape
                shape = x.shape[-3:]
                need(p == p2 and shape[0] == c and shape[1] % p == 0 and shape[2] % p == 0, op,
                     f"weight {op.weight.shape} does not fit input {x.shape}")
                need(len(x.shape) == 3 or x.shape[0] == op.timesteps, op, "event frames must have T steps")
                out = (op.timesteps, (shape[1] // p) * (shape[2] // p), o)
            else:
                need(op.weight.ndim == 2 and x.shape[-1] == op.weight.shape[1], op,
                     f"weight {op.weight.shape} does not fit input {x.shape}")
                out = (*x.shape[:-1], op.weight.shape[0])
            types[op.dst] = TensorType(out, lo, hi)

        elif isinstance(op, Tokenize):
            x = ins[0]
            need(op.src == graph.input_name, op, f"reads {op.src!r}: only the graph's input is tokenized")
            need(op.timesteps == timesteps, op, f"timesteps {op.timesteps} differ from the graph's {timesteps}")
            need(len(x.shape) == 3 or (len(x.shape) == 4 and x.shape[0] == op.timesteps), op,
                 f"input {x.shape} is neither an image [C, H, W] nor {op.timesteps} event frames [T, C, H, W]")
            c, h, w = x.shape[-3:]
            types[op.dst] = TensorType((op.timesteps, h * w, c), x.lo, x.hi)

        elif isinstance(op, Conv):
            x = ins[0]
            need(_is_int_array(op.weight) and op.weight.ndim == 4, op, "weights must be an int64 array [O, C/G, k, k]")
            qlo, qhi = -(1 << (op.bits - 1)), (1 << (op.bits - 1)) - 1
            need(op.weight.size == 0 or (op.weight.min() >= qlo and op.weight.max() <= qhi), op,
                 f"weights outside the signed {op.bits}-bit range")
            _check_grid(op, x, graph, need)
            o, cg, k, k2 = op.weight.shape
            c = x.shape[2]
            need(k == k2 and k >= 1, op, f"kernel {k} x {k2} is not square")
            need(0 <= op.padding < k, op, f"padding {op.padding} must be 0..{k - 1} (kernel {k})")
            need(isinstance(op.groups, int) and op.groups >= 1 and c % op.groups == 0 and o % op.groups == 0
                 and cg * op.groups == c, op,
                 f"weight {op.weight.shape} with {op.groups} groups does not fit input {x.shape}")
            need(op.out_height >= 1 and op.out_width >= 1, op,
                 f"kernel {k} (padding {op.padding}) is larger than the {op.height} x {op.width} grid")
            # a padded window also reads zeros: with padding, 0 joins the inputs' range
            lo, hi = _range_of_dot(op.weight, *((min(x.lo, 0), max(x.hi, 0)) if op.padding else (x.lo, x.hi)))
            types[op.dst] = TensorType((x.shape[0], op.out_height * op.out_width, o), lo, hi)

        elif isinstance(op, MaxPool):
            x = ins[0]
            _check_grid(op, x, graph, need)
            need(x.lo >= 0, op, f"input range [{x.lo}, {x.hi}] is not non-negative (max-pool is on spikes)")
            need(isinstance(op.kernel, int) and op.kernel >= 1, op, f"kernel {op.kernel!r} must be at least 1")
            need(0 <= op.padding <= op.kernel // 2, op,
                 f"padding {op.padding} must be 0..{op.kernel // 2} (half the kernel {op.kernel})")
            need(op.out_height >= 1 and op.out_width >= 1, op,
                 f"kernel {op.kernel} is larger than the {op.height} x {op.width} grid")
            types[op.dst] = TensorType((x.shape[0], op.out_height * op.out_width, x.shape[2]), x.lo, x.hi)

        elif isinstance(op, (AffineRequant, Requant)):
            x = ins[0]
            o = x.shape[-1]
            bias = op.b if isinstance(op, AffineRequant) else op.bias
            need(bias.shape in ((o,), (*x.shape[-2:-1], o)), op, f"bias shape {bias.shape} for input {x.shape}")
            if isinstance(op, AffineRequant):
                need(op.a.shape == (o,) and np.isfinite(op.a).all() and np.isfinite(op.b).all(), op,
                     "scale must be finite, one per channel")
                scale = 2.0 ** (op.frac or 0)
                ends = [(a * v + b) * scale for a, b in zip(op.a, op.b.reshape(-1, o).T) for v in (x.lo, x.hi)
                        for b in (b.min(), b.max())]
                lo, hi = math.floor(min(ends)), math.ceil(max(ends)) + 1
                if op.saturate is not None:
                    slo, shi = _sat_range(op.saturate)
                    lo, hi = max(lo, slo), min(hi, shi)
            else:
                need(_is_int_array(op.mult) and _is_int_array(op.bias) and op.mult.shape == (o,), op,
                     "mult and bias must be int64 arrays, mult one per channel")
                need(0 <= op.shift < 62, op, f"shift {op.shift} out of range")
                mlo, mhi = _sat_range(MAX_MULT_BITS)
                need(op.mult.min() >= mlo and op.mult.max() <= mhi, op, f"multiplier exceeds {MAX_MULT_BITS} bits")
                lo, hi = _requant_range(op, x)
            types[op.dst] = TensorType(x.shape, lo, hi)

        elif isinstance(op, Add):
            a, b = ins
            need(a.shape == b.shape, op, f"shapes differ: {a.shape} vs {b.shape}")
            slo, shi = _sat_range(op.width)
            need(slo <= a.lo and a.hi <= shi, op, f"input {op.a!r} exceeds {op.width} bits")
            types[op.dst] = TensorType(a.shape, max(slo, a.lo + b.lo), min(shi, a.hi + b.hi))

        elif isinstance(op, (AffineNeuron, Neuron)):
            x = ins[0]
            o = x.shape[-1]
            need(op.levels in (1, 2, 4), op, f"levels {op.levels} not supported")
            need(len(x.shape) == 3 and x.shape[0] == timesteps, op, f"input {x.shape} is not [T, N, C]")
            if isinstance(op, AffineNeuron):
                need(op.a.shape == (o,) and op.b.shape == (o,), op, "one scale and bias per channel")
                need(np.isfinite(op.a).all() and np.isfinite(op.b).all(), op, "scale and bias must be finite")
            else:
                need(_is_int_array(op.sign) and _is_int_array(op.bias) and _is_int_array(op.theta), op,
                     "sign, bias and theta must be int64 arrays")
                need(op.sign.shape == (o,) and op.bias.shape == (o,) and op.theta.shape == (o, op.levels), op,
                     f"parameter shapes do not match {o} channels x {op.levels} levels")
                need(np.isin(op.sign, (-1, 0, 1)).all(), op, "sign must be -1, 0 or 1")
                need(bool((np.diff(op.theta, axis=1) >= 0).all()), op, "thresholds must be non-decreasing")
                need(0 <= op.frac <= 24, op, f"frac {op.frac} out of range")
                hlo, hhi = membrane_range(op, x, timesteps)
                need(-INT_LIMIT < hlo and hhi < INT_LIMIT, op, "membrane range exceeds 62 bits")
            types[op.dst] = TensorType(x.shape, 0, op.levels)

        elif isinstance(op, CoSpike):
            k, v = ins
            need(k.shape == v.shape and k.lo >= 0 and v.lo >= 0, op, "K and V must be spike maps of one shape")
            t, n, c = k.shape
            types[op.dst] = TensorType((t, 1, c), 0, n * k.hi * v.hi)

        elif isinstance(op, Mask):
            q, m = ins
            need(m.lo >= 0 and m.hi <= 1 and m.shape == (q.shape[0], 1, q.shape[2]), op,
                 "mask must be binary, one per time step and channel")
            types[op.dst] = TensorType(q.shape, 0, q.hi)

        elif isinstance(op, LinearAttention):
            q, k, v = ins
            need(q.shape == k.shape == v.shape, op, "Q, K and V must have one shape")
            t, n, c = q.shape
            need(op.heads >= 1 and c % op.heads == 0, op, f"{op.heads} heads do not divide {c} channels")
            d = c // op.heads
            types[op.dst] = TensorType(q.shape, 0, d * q.hi * n * k.hi * v.hi)

        elif isinstance(op, SumPool):
            x = ins[0]
            count = int(np.prod(x.shape[:-1]))
            types[op.dst] = TensorType((x.shape[-1],), count * x.lo, count * x.hi)

        else:
            raise IRError(f"{op.name}: unknown op type {type(op).__name__}")
        t = types[op.dst]
        need(-INT_LIMIT < t.lo <= t.hi < INT_LIMIT, op, f"value range [{t.lo}, {t.hi}] exceeds 62 bits")

    if graph.output not in types:
        raise IRError(f"graph output {graph.output!r} is never computed")
    return types


def check(graph: Graph, integer: bool = False) -> dict[str, TensorType]:
    """Validate ``graph`` (shapes, bit widths, value ranges); integer=True also refuses float ops."""
    try:
        return infer_types(graph, integer=integer)
    except IRError as exc:
        raise UserError(f"the model cannot be lowered: {exc}") from None
