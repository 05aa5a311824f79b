"""From the trained PyTorch model to the IR: each layer becomes IR ops whose neurons and residual additions
still carry the float affine maps (BN and the LSQ scales) that :mod:`compiler.passes` folds into integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import ir
from .model import RESIDUAL_FRAC, RESIDUAL_WIDTH, ConvBN, QSDTransformer
from .quant import SpikeNeuron


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
        theta = np.array([math.ceil(t * (1 << RESIDUAL_FRAC)) for t in ir.neuron_thresholds(d)], dtype=np.int64)
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
def to_ir(model: QSDTransformer) -> ir.Graph:
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
