"""From the float PyTorch model to the integer IR: a frontend and the lowering passes.

``frontend`` reads the trained model into IR ops whose neurons and residual additions still carry the
float affine maps that BN and the LSQ scales fold into. ``fold_thresholds`` turns each neuron into integer
multi-threshold comparisons, ``fix_requants`` turns each affine map into an integer multiply, add and
rounding shift. The checker runs after every pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from . import ir
from .errors import UserError
from .model import RESIDUAL_FRAC, RESIDUAL_WIDTH, ConvBN, QSDTransformer
from .quant import SpikeNeuron, thresholds

NEURON_FRAC = 12          # fractional bits of a stateful (T > 1) neuron's membrane, in accumulator units
MAX_SHIFT = 32            # bound on a requantization's rounding shift


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as ``y = scale * x + shift`` (float64)."""
    var = bn.running_var.double()
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.double() * scale
    return scale.numpy(), shift.numpy()


class _Builder:
    """Appends ops to a graph with readable, unique tensor names."""

    def __init__(self, model: QSDTransformer):
        self.model = model
        self.cfg = model.cfg
        self.ops: list[ir.Op] = []

    def add(self, op: ir.Op) -> str:
        self.ops.append(op)
        return op.dst

    def residual_neuron(self, name: str, src: str, sn: SpikeNeuron) -> str:
        """A neuron reading the fixed-point residual stream directly: thresholds are exact grid points."""
        d = sn.levels
        theta = np.array([math.ceil(t * (1 << RESIDUAL_FRAC)) for t in thresholds(d)], dtype=np.int64)
        c = self.cfg.dim
        return self.add(ir.Neuron(name, src, d, np.ones(c, np.int64), np.zeros(c, np.int64), 0,
                                  np.tile(theta, (c, 1)), sn.leak_shift))

    def dense(self, name: str, src: str, layer: ConvBN | nn.Module, in_scale: float):
        """A quantized linear layer (with its BN, if any) -> (ACC tensor, affine a, affine b)."""
        linear = layer.linear if isinstance(layer, ConvBN) else layer
        w_int, alpha = linear.quant.integer(linear.weight)
        acc = self.add(ir.Dense(name, src, w_int.numpy(), linear.quant.bits))
        a = alpha.numpy() * in_scale
        if isinstance(layer, ConvBN):
            s, t = _bn_affine(layer.bn)
            return acc, a * s, t
        bias = linear.bias.detach().double().numpy() if linear.bias is not None else np.zeros_like(a)
        return acc, a, bias

    def spiking(self, name: str, src: str, layer: ConvBN, sn: SpikeNeuron) -> str:
        acc, a, b = self.dense(name, src, layer, 1.0 / self.cfg.levels)
        return self.add(ir.AffineNeuron(f"{name}.sn", acc, sn.levels, a, b, sn.leak_shift))

    def residual_branch(self, name: str, res: str, src: str, layer: ConvBN) -> str:
        acc, a, b = self.dense(name, src, layer, 1.0 / self.cfg.levels)
        c = self.add(ir.AffineRequant(f"{name}.rq", acc, a, b, RESIDUAL_FRAC, None))
        return self.add(ir.Add(f"{name}.add", res, c, RESIDUAL_WIDTH))


@torch.no_grad()
def frontend(model: QSDTransformer) -> ir.Graph:
    """Read a QSDTransformer (in eval mode) into an IR graph with float affine neurons and requants."""
    model.eval()
    cfg = model.cfg
    D = cfg.levels
    g = _Builder(model)
    pixel_max = 255 if cfg.input == "image" else 1
    in_type = ir.TensorType(cfg.input_shape(), 0, pixel_max)

    w_int, alpha = model.stem.quant.integer(model.stem.weight)
    acc = g.add(ir.PatchConv("stem", "input", w_int.numpy(), cfg.bits, cfg.timesteps))
    s, t = _bn_affine(model.stem_bn)
    a = alpha.numpy() / pixel_max * s
    b = t if model.pos is None else t[None, :] + model.pos.detach().double().numpy()   # [O] or [N, O]
    res = g.add(ir.AffineRequant("stem.rq", acc, a, b, RESIDUAL_FRAC, RESIDUAL_WIDTH))

    for i, block in enumerate(model.blocks):
        p = f"block{i}"
        at = block.attn
        s_in = g.residual_neuron(f"{p}.attn.in", res, at.input_sn)
        q = g.spiking(f"{p}.attn.q", s_in, at.q, at.q_sn)
        k = g.spiking(f"{p}.attn.k", s_in, at.k, at.k_sn)
        v = g.spiking(f"{p}.attn.v", s_in, at.v, at.v_sn)
        ones = np.ones(cfg.dim)
        if at.kind == "sdsa1":
            co = g.add(ir.CoSpike(f"{p}.attn.cospike", k, v))
            m = g.add(ir.AffineNeuron(f"{p}.attn.kv", co, 1, ones * (cfg.attn_scale / D ** 2),
                                      ones * 0.0, at.attn_sn.leak_shift))
            a_out = g.add(ir.Mask(f"{p}.attn.mask", q, m))
        else:
            acc = g.add(ir.LinearAttention(f"{p}.attn.qkv", q, k, v, cfg.heads))
            a_out = g.add(ir.AffineNeuron(f"{p}.attn.sn", acc, D, ones * (cfg.attn_scale / D ** 3),
                                          ones * 0.0, at.attn_sn.leak_shift))
        res = g.residual_branch(f"{p}.attn.proj", res, a_out, at.proj)

        mlp = block.mlp
        s_in = g.residual_neuron(f"{p}.mlp.in", res, mlp.input_sn)
        h = g.spiking(f"{p}.mlp.fc1", s_in, mlp.fc1, mlp.hidden_sn)
        res = g.residual_branch(f"{p}.mlp.fc2", res, h, mlp.fc2)

    s_out = g.residual_neuron("head.in", res, model.head_sn)
    pooled = g.add(ir.SumPool("head.pool", s_out))
    acc, a, b = g.dense("head", pooled, model.head, 1.0 / (D * cfg.tokens * cfg.timesteps))
    logits = g.add(ir.AffineRequant("logits", acc, a, b, None, None))
    meta = {"timesteps": cfg.timesteps, "levels": D, "classes": cfg.classes, "config": cfg.to_dict(),
            "residual": {"width": RESIDUAL_WIDTH, "frac": RESIDUAL_FRAC}}
    return ir.Graph("input", in_type, cfg.input, g.ops, logits, meta)


def fold_thresholds(graph: ir.Graph) -> ir.Graph:
    """Replace each AffineNeuron (``u = a * ACC + b``) by integer multi-threshold comparisons.

    With one time step the bias folds into the thresholds exactly: ``theta = ceil((thr - b) / |a|)``.
    With state, the membrane is kept in accumulator units with NEURON_FRAC fractional bits:
    ``X = sign(a) * (ACC << F) + B`` with ``B = round(b / |a| * 2**F)``, and
    ``theta = B + ceil((thr - b) / |a| * 2**F)``, so that the first step compares exactly.
    Thresholds are clamped to the membrane's reachable range (which changes no comparison).
    """
    types = ir.infer_types(graph)
    T = graph.meta["timesteps"]
    ops: list[ir.Op] = []
    for op in graph.ops:
        if not isinstance(op, ir.AffineNeuron):
            ops.append(op)
            continue
        src = types[op.src]
        thr = np.array(thresholds(op.levels))
        sign = np.sign(op.a).astype(np.int64)
        mag = np.where(sign == 0, 1.0, np.abs(op.a))
        frac = 0 if T == 1 else NEURON_FRAC
        bias = np.zeros_like(sign) if T == 1 else np.round(op.b / mag * (1 << frac)).astype(np.int64)
        # theta - bias is rounded as one number, so the first step compares exactly as the float model
        raw = bias[:, None] + np.ceil((thr[None, :] - op.b[:, None]) / mag[:, None] * (1 << frac))
        provisional = ir.Neuron(op.name, op.src, op.levels, sign, bias, frac,
                                np.zeros((len(sign), op.levels), np.int64), op.leak_shift)
        xlo, xhi = ir.neuron_input_range(provisional, src)
        s = op.leak_shift if T > 1 else 0
        lo, hi = min(xlo, xlo << s), max(xhi, xhi << s) + 1
        theta = np.clip(raw, lo, hi).astype(np.int64)
        ops.append(ir.Neuron(op.name, op.src, op.levels, sign, bias, frac, theta, op.leak_shift))
    return ir.Graph(graph.input_name, graph.input_type, graph.input_kind, ops, graph.output, graph.meta)


def fix_requants(graph: ir.Graph) -> ir.Graph:
    """Replace each AffineRequant by an integer multiplier, bias and rounding shift.

    The shift is the largest (at most MAX_SHIFT) that keeps every multiplier within MULT_BITS signed bits;
    a scale so large that even shift 1 needs more (a channel whose BN variance is near zero) keeps shift 1
    and gets a wider multiplier, up to the checker's limit of two cascaded multipliers."""
    ops: list[ir.Op] = []
    for op in graph.ops:
        if not isinstance(op, ir.AffineRequant):
            ops.append(op)
            continue
        peak = float(np.abs(op.a).max()) * 2.0 ** (op.frac or 0)
        room = ir.MULT_BITS - 1 - (math.ceil(math.log2(peak)) if peak > 0 else 0)
        if op.frac is None:            # logits: no rounding, as many fractional bits as the multiplier allows
            frac, shift = max(0, min(room, MAX_SHIFT)), 0
            total = 2.0 ** frac
        else:                          # a scale too large for MULT_BITS (a near-zero BN variance) gets a wider one
            frac, shift = op.frac, max(1, min(room, MAX_SHIFT))
            total = 2.0 ** (frac + shift)
        mult = np.round(op.a * total).astype(np.int64)
        bias = np.round(op.b * total).astype(np.int64)
        ops.append(ir.Requant(op.name, op.src, mult, bias, shift, frac, op.saturate))
    return ir.Graph(graph.input_name, graph.input_type, graph.input_kind, ops, graph.output, graph.meta)


PASSES = (fold_thresholds, fix_requants)


def lower(model: QSDTransformer) -> ir.Graph:
    """Frontend, then every pass, with the checker between passes; the result is integer-only."""
    graph = frontend(model)
    ir.check(graph)
    for p in PASSES:
        try:
            graph = p(graph)
        except ir.IRError as exc:
            raise UserError(f"the model cannot be lowered: {exc}") from None
        ir.check(graph)
    ir.check(graph, integer=True)
    return graph
